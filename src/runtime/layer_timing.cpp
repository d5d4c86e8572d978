// time_layer_ms: one layer in a model of its own, timed by the Session that runs models.
#include "bitmix/runtime/layer_timing.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/runtime/model.hpp"

namespace bitmix::runtime {
namespace {

// The activation quantizer of the timed layer's input and output (the scale only sets which
// floats give which codes; the kernels' work does not depend on it).
kernels::ActivationQuant activation_quant(int bits) { return kernels::ActivationQuant{bits, 0.05f, 0, true}; }

kernels::PackedWeights random_weights(const kernels::WeightSpec& spec, Rng& rng) {
  std::vector<int32_t> codes(static_cast<std::size_t>(spec.code_count()));
  const int32_t lo = -(1 << (spec.bits - 1)), span = 1 << spec.bits;
  for (int32_t& c : codes) c = lo + static_cast<int32_t>(rng.below(static_cast<uint64_t>(span)));
  return kernels::PackedWeights::pack(codes, spec);
}

kernels::PackedWeights zero_weights(int64_t out_channels, int64_t in_channels) {
  const kernels::WeightSpec spec{out_channels, in_channels, 1, 1, 1, kernels::WeightEncoding::twos_complement, false};
  return kernels::PackedWeights::pack(std::vector<int32_t>(static_cast<std::size_t>(spec.code_count()), 0), spec);
}

std::vector<float> filled(int64_t n, float v) { return std::vector<float>(static_cast<std::size_t>(n), v); }

// Ends the model after the timed op (value `x`) with logits, as cheaply as the ops allow: a
// packed spatial output goes through a one-channel 1x1 convolution, a spatial float output is
// pooled, and a one-output linear layer with float output makes the logits. None of it is timed.
int32_t add_tail(ModelBuilder& b, int32_t x) {
  if (b.value(x).kind == ValueKind::real && b.value(x).shape.size() == 1) return x;
  if (b.value(x).kind == ValueKind::packed && (b.value(x).shape[1] != 1 || b.value(x).shape[2] != 1)) {
    ConvParams c;
    c.weights = zero_weights(1, b.value(x).shape[0]);
    c.epilogue = kernels::Epilogue::float_output({1.0f}, {0.0f}, false);
    x = b.conv2d("timing.tail.conv", x, std::move(c));
  }
  if (b.value(x).kind == ValueKind::real) {
    if (b.value(x).shape.size() == 3 && (b.value(x).shape[1] != 1 || b.value(x).shape[2] != 1))
      x = b.global_avg_pool("timing.tail.pool", x);
    QuantizeParams q;
    q.quant = activation_quant(8);
    x = b.quantize("timing.tail.input", x, q);
  }
  ConvParams fc;
  fc.weights = zero_weights(1, b.value(x).shape[0]);
  fc.epilogue = kernels::Epilogue::float_output({1.0f}, {0.0f}, false);
  return b.linear("timing.tail.fc", x, std::move(fc));
}

}  // namespace

double time_layer_ms(const LayerShape& layer, int w_bits, int a_bits, const TimingOptions& options) {
  const std::string name = layer.name.empty() ? std::string("layer") : layer.name;
  if (w_bits < 1 || w_bits > 8 || a_bits < 1 || a_bits > 8)
    throw ArgumentError(fmt::format("latency of {} at W{}A{}: bits outside 1..8", name, w_bits, a_bits));
  if (layer.batch < 1) throw ArgumentError(fmt::format("latency of {}: batch {}, expected >= 1", name, layer.batch));
  if (options.min_repeats < 1)
    throw ArgumentError(fmt::format("latency of {}: {} repeats, expected >= 1", name, options.min_repeats));
  const bool linear = layer.kind == LayerKind::linear;
  if (linear && (layer.height != 1 || layer.width != 1 || layer.kernel_h != 1 || layer.kernel_w != 1 ||
                 layer.depthwise))
    throw ArgumentError(fmt::format("latency of linear layer {}: expected a 1x1 input and dense 1x1 weights", name));
  Rng rng = Rng(options.seed).fork(static_cast<uint64_t>(w_bits * 16 + a_bits));

  ModelInfo info;
  info.name = fmt::format("timing of {}", name);
  info.input_shape = {layer.in_channels, layer.height, layer.width};
  ModelBuilder b(std::move(info));
  QuantizeParams input;
  input.quant = activation_quant(a_bits);
  input.border = std::max(layer.pad_h, layer.pad_w);
  const int32_t codes = b.quantize(name + ".input", b.input(), input);

  const kernels::WeightSpec spec{layer.out_channels, layer.in_channels, layer.kernel_h, layer.kernel_w, w_bits,
                                 kernels::WeightEncoding::twos_complement, layer.depthwise};
  kernels::validate(spec, fmt::format("latency of {}", name));
  ConvParams c;
  c.weights = random_weights(spec, rng);
  c.conv = kernels::Conv2dParams{layer.stride_h, layer.stride_w, layer.pad_h, layer.pad_w};
  const std::vector<float> scale = filled(layer.out_channels, 1e-3f), bias = filled(layer.out_channels, 0.01f);
  c.epilogue = layer.packed_output
                   ? kernels::Epilogue::requantize(scale, bias, layer.relu, activation_quant(a_bits), 1)
                   : kernels::Epilogue::float_output(scale, bias, layer.relu);
  const int32_t out = linear ? b.linear(name, codes, std::move(c)) : b.conv2d(name, codes, std::move(c));
  const std::size_t timed_op = static_cast<std::size_t>(out - 1);
  const Model model = b.finish(add_tail(b, out));

  // A layer reading its predecessor's requantized codes never runs as a float GEMM (the session
  // only substitutes it for a convolution read from a quantize op): time the bit-serial path.
  SessionOptions so;
  so.float_gemm = layer.quantized_input ? options.float_gemm : FloatGemmPolicy::never;
  so.kernel_family = options.kernel_family;
  Session session(model, so);
  Tensor images(Shape{layer.batch, layer.in_channels, layer.height, layer.width});
  const float top = static_cast<float>((1 << a_bits) - 1) * 0.05f;
  for (int64_t i = 0; i < images.numel(); ++i) images.data()[i] = rng.uniform(0.0f, top);
  Tensor logits;
  session.run_normalized(images, logits);  // warm-up: first touch of the buffers, kernel tables
  std::vector<double> times;
  Stopwatch total;
  while (static_cast<int>(times.size()) < options.min_repeats || total.seconds() < options.min_seconds) {
    session.run_normalized(images, logits);
    times.push_back(session.timings()[timed_op].last_seconds * 1e3);
    if (times.size() > 10000) break;
  }
  std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2), times.end());
  return times[times.size() / 2];
}

}  // namespace bitmix::runtime
