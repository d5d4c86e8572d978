#pragma once
// Measuring the latency table the latency budget searches against: every quantizable layer's
// bit-serial kernel (convolution or GEMM with its requantizing epilogue, as the runtime chains
// them) timed at every (w_bits, a_bits) pair on this machine, with the active ISA and thread
// count. Residual additions, pooling and the per-block quantize-and-pack are not per-layer
// choices and are left out (docs/search.md).

#include <vector>

#include "bitmix/nn/module.hpp"
#include "bitmix/search/cost.hpp"

namespace bitmix::search {

struct LatencyOptions {
  int batch = 1;
  std::vector<int> w_bits{1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<int> a_bits{1, 2, 3, 4, 5, 6, 7, 8};
  double min_seconds = 0.02;  // per entry: repeat until this much time has passed
  int min_repeats = 3;
  uint64_t seed = 1;          // random codes
};

// One table entry per layer and (w_bits, a_bits) pair; the median time of the repeats. Layers
// whose shape the kernels do not support (grouped but not depthwise) raise ArgumentError.
LatencyTable measure_latency(const std::vector<nn::LayerInfo>& layers, const LatencyOptions& options,
                             const std::string& machine);

// The time of one layer at one pair, in milliseconds (the same measurement, exposed for tests).
double measure_layer_ms(const nn::LayerInfo& layer, int w_bits, int a_bits, const LatencyOptions& options);

}  // namespace bitmix::search
