#include "bitmix/search/latency.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/kernels/conv.hpp"
#include "bitmix/nn/layers.hpp"

namespace bitmix::search {
namespace {

std::vector<int32_t> random_weight_codes(int64_t count, int bits, Rng& rng) {
  std::vector<int32_t> codes(static_cast<std::size_t>(count));
  const int32_t lo = -(1 << (bits - 1)), span = 1 << bits;
  for (int32_t& c : codes) c = lo + static_cast<int32_t>(rng.below(static_cast<uint64_t>(span)));
  return codes;
}

std::vector<uint8_t> random_activation_codes(int64_t count, int bits, Rng& rng) {
  std::vector<uint8_t> codes(static_cast<std::size_t>(count));
  for (uint8_t& c : codes) c = static_cast<uint8_t>(rng.below(uint64_t{1} << bits));
  return codes;
}

template <typename Fn>
double median_ms(Fn&& run, const LatencyOptions& options) {
  run();  // warm-up: first-touch of outputs, kernel tables
  std::vector<double> times;
  Stopwatch total;
  while (static_cast<int>(times.size()) < options.min_repeats || total.seconds() < options.min_seconds) {
    Stopwatch one;
    run();
    times.push_back(one.milliseconds());
    if (times.size() > 10000) break;
  }
  std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2), times.end());
  return times[times.size() / 2];
}

}  // namespace

double measure_layer_ms(const nn::LayerInfo& layer, int w_bits, int a_bits, const LatencyOptions& options) {
  if (w_bits < 1 || w_bits > 8 || a_bits < 1 || a_bits > 8)
    throw ArgumentError(fmt::format("latency of {} at W{}A{}: bits outside 1..8", layer.name, w_bits, a_bits));
  Rng rng = Rng(options.seed).fork(static_cast<uint64_t>(w_bits * 16 + a_bits));
  const int64_t batch = options.batch;
  const kernels::ActivationQuant in_quant{a_bits, 0.05f, 0};
  // The next layer's input format: requantized at the same activation bits, with a 1-pixel
  // border (the 3x3 convolutions' padding).
  const kernels::ActivationQuant out_quant{a_bits, 0.05f, 0};
  if (layer.conv != nullptr) {
    const nn::Conv2dOptions& c = layer.conv->options();
    const bool depthwise = c.groups > 1 && c.groups == c.in_channels;
    if (c.groups != 1 && !depthwise)
      throw ArgumentError(fmt::format("layer {}: grouped convolution ({} groups) has no bit-serial kernel", layer.name,
                                      c.groups));
    kernels::WeightSpec spec{c.out_channels, c.in_channels, c.kernel_h, c.kernel_w, w_bits,
                             kernels::WeightEncoding::twos_complement, depthwise};
    const kernels::PackedWeights weights =
        kernels::PackedWeights::pack(random_weight_codes(spec.code_count(), w_bits, rng), spec);
    const int64_t h = layer.input_shape[1], w = layer.input_shape[2];
    const int border = static_cast<int>(std::max(c.pad_h, c.pad_w));
    const kernels::PackedActivations input = kernels::PackedActivations::from_codes(
        random_activation_codes(batch * c.in_channels * h * w, a_bits, rng), batch, c.in_channels, h, w, in_quant,
        border);
    const kernels::Conv2dParams params{static_cast<int>(c.stride_h), static_cast<int>(c.stride_w),
                                       static_cast<int>(c.pad_h), static_cast<int>(c.pad_w)};
    const std::vector<float> scale(static_cast<std::size_t>(c.out_channels), 1e-3f);
    const std::vector<float> bias(static_cast<std::size_t>(c.out_channels), 0.01f);
    const kernels::Epilogue epilogue = kernels::Epilogue::requantize(scale, bias, true, out_quant, 1);
    kernels::PackedActivations output;
    return median_ms([&] { kernels::conv2d(input, weights, params, epilogue, output); }, options);
  }
  if (layer.linear != nullptr) {
    const int64_t in = layer.linear->in_features(), out = layer.linear->out_features();
    kernels::WeightSpec spec{out, in, 1, 1, w_bits, kernels::WeightEncoding::twos_complement, false};
    const kernels::PackedWeights weights =
        kernels::PackedWeights::pack(random_weight_codes(spec.code_count(), w_bits, rng), spec);
    const kernels::PackedActivations input = kernels::PackedActivations::from_codes(
        random_activation_codes(batch * in, a_bits, rng), batch, in, 1, 1, in_quant, 0);
    const kernels::Epilogue epilogue = kernels::Epilogue::float_output(std::vector<float>(static_cast<std::size_t>(out), 1e-3f),
                                                                       std::vector<float>(static_cast<std::size_t>(out), 0.0f), false);
    Tensor output;
    return median_ms([&] { kernels::gemm(input, weights, epilogue, output); }, options);
  }
  throw ArgumentError(fmt::format("layer {} is neither a convolution nor a linear layer", layer.name));
}

LatencyTable measure_latency(const std::vector<nn::LayerInfo>& layers, const LatencyOptions& options,
                             const std::string& machine) {
  if (options.batch < 1) throw ArgumentError(fmt::format("latency batch {}: expected >= 1", options.batch));
  LatencyTable table(machine, options.batch, num_threads());
  for (const nn::LayerInfo& layer : layers)
    for (int w : options.w_bits)
      for (int a : options.a_bits) table.set(layer.name, w, a, measure_layer_ms(layer, w, a, options));
  return table;
}

}  // namespace bitmix::search
