#pragma once
// bitmix::quant: quantizers (fake-quant forward, backward, exact integer export), post-training
// calibrators and BitConfig, the per-layer bitwidth file (docs/quantization.md).
#include "bitmix/quant/bit_config.hpp"
#include "bitmix/quant/calibrator.hpp"
#include "bitmix/quant/incremental.hpp"
#include "bitmix/quant/mixing.hpp"
#include "bitmix/quant/quantizer.hpp"
