#pragma once
// bitmix::search: bitwidth search (EBS over shared meta weights, the DNAS baseline), cost models
// with BitOPs/size/latency budgets, bit selection (docs/search.md), and post-training allocation
// (CLADO, HAWQ-style, independent) on one exact solver (docs/allocation.md).
#include "bitmix/search/allocation.hpp"
#include "bitmix/search/cost.hpp"
#include "bitmix/search/dnas.hpp"
#include "bitmix/search/mixture.hpp"
#include "bitmix/search/search.hpp"
#include "bitmix/search/selection.hpp"
#include "bitmix/search/sensitivity.hpp"
