#pragma once
// The umbrella header: everything bitmix offers. Programs that need only part of it include
// a module header instead (bitmix/runtime.hpp for inference links only runtime, kernels, core).
#include "bitmix/core.hpp"
#include "bitmix/data.hpp"
#include "bitmix/deploy.hpp"
#include "bitmix/kernels.hpp"
#include "bitmix/nn.hpp"
#include "bitmix/quant.hpp"
#include "bitmix/runtime.hpp"
#include "bitmix/search.hpp"
#include "bitmix/support.hpp"
