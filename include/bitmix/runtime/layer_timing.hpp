#pragma once
// Timing one quantizable layer as the inference session runs it, for the latency tables that
// latency budgets search against (`bitmix latency`, docs/search.md).
//
// The layer is built into a small runtime Model (a quantize op, the layer, a cheap tail that
// turns its output into logits) and run by a Session; the time is the Session's own timing of
// the layer's op. So the table measures exactly the session's code path for that op: the
// kernel family's convolution with its epilogue, or the float GEMM the session substitutes for a narrow
// convolution read straight from a quantize op (FloatGemmPolicy), with the active ISA and
// thread count. Residual additions, pooling and the quantize ops between blocks are not
// per-layer choices and are not timed.

#include <cstdint>
#include <string>

#include "bitmix/runtime/session.hpp"

namespace bitmix::runtime {

enum class LayerKind : uint8_t { conv2d, linear };

// A convolution or fully connected layer, by shape only (runtime knows nothing of nn: the
// caller maps its layers to shapes).
struct LayerShape {
  std::string name;  // for messages and the op's name
  LayerKind kind = LayerKind::conv2d;
  int64_t in_channels = 0;   // linear: input features
  int64_t out_channels = 0;  // linear: output features
  int64_t height = 1, width = 1;  // the input's extent (linear: 1 x 1)
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  bool depthwise = false;  // groups = in_channels (the only grouping the kernels run)
  int64_t batch = 1;
  // The layer reads codes made by a quantize op from floats (the model input, a residual sum)
  // rather than codes its predecessor's epilogue requantized: only then may the session run
  // it as a float GEMM.
  bool quantized_input = false;
  // The epilogue requantizes into the next layer's codes (same activation bits, a 1-pixel
  // border) or writes floats (before a residual addition, the logits).
  bool packed_output = true;
  bool relu = true;
};

struct TimingOptions {
  double min_seconds = 0.02;  // repeat until this much time has passed ...
  int min_repeats = 3;        // ... and at least this often; the median is kept
  uint64_t seed = 1;          // random weight codes and inputs
  // The policy of the sessions that will run the model (SessionOptions::float_gemm).
  FloatGemmPolicy float_gemm = FloatGemmPolicy::narrow_inputs;
  // Their kernel family (SessionOptions::kernel_family): with `automatic` the layer runs the
  // family those sessions would pick for it, so the table holds the time of what really runs.
  kernels::KernelFamily kernel_family = kernels::KernelFamily::automatic;
};

// The median time of the layer at (w_bits, a_bits), in milliseconds. ArgumentError (naming the
// layer) for bits outside 1..8, a batch below 1, or a shape the runtime cannot run.
double time_layer_ms(const LayerShape& layer, int w_bits, int a_bits, const TimingOptions& options);

}  // namespace bitmix::runtime
