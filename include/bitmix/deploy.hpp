#pragma once
// bitmix::deploy: the compiler from a quantization-aware model (nn + quant) and its BitConfig to
// the runtime's integer model (docs/runtime.md).
#include "bitmix/deploy/compiler.hpp"
#include "bitmix/deploy/layer_timing.hpp"
