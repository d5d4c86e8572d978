#pragma once
// bitmix::search: bitwidth search (EBS over shared meta weights, the DNAS baseline), cost models
// with BitOPs/size/latency budgets, and bit selection (docs/search.md).
#include "bitmix/search/cost.hpp"
#include "bitmix/search/dnas.hpp"
#include "bitmix/search/mixture.hpp"
#include "bitmix/search/search.hpp"
#include "bitmix/search/selection.hpp"
