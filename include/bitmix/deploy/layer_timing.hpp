#pragma once
// The runtime shapes of a model's quantizable layers, for timing them with
// runtime::time_layer_ms (the per-layer latency tables of `bitmix latency`).

#include <cstdint>
#include <vector>

#include "bitmix/nn/module.hpp"
#include "bitmix/runtime/layer_timing.hpp"

namespace bitmix::deploy {

// One shape per layer, in order, at `batch` images per call. The first layer reads the model
// input through a quantize op (so the session may run it as a float GEMM); the others read
// codes requantized by the layer before. Convolutions requantize their output (with ReLU) into
// the next layer's codes, linear layers write floats. The compiled model differs in one point
// the table does not follow: a convolution that feeds a residual addition writes floats
// (about the cost of packing its output, next to the convolution itself). ArgumentError naming
// the layer for grouped convolutions other than depthwise (no kernel runs them) and for layers
// that are neither Conv2d nor Linear.
std::vector<runtime::LayerShape> timing_shapes(const std::vector<nn::LayerInfo>& layers, int64_t batch);

}  // namespace bitmix::deploy
