#pragma once
// The umbrella header: everything bitmix offers. Programs that need only part of it include
// the module headers (bitmix/core.hpp, bitmix/data/..., bitmix/runtime/...) instead.
#include "bitmix/core.hpp"
#include "bitmix/data/dataset.hpp"
#include "bitmix/data/loader.hpp"
#include "bitmix/quant.hpp"
#include "bitmix/runtime.hpp"
#include "bitmix/deploy.hpp"
