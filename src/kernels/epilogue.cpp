#include "bitmix/kernels/epilogue.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "bitmix/core/error.hpp"
#include "kernel_table.hpp"
#include "layout.hpp"

namespace bitmix::kernels {
namespace {

// The accumulator range conv2d() admits (checked there): |acc| <= kAccLimit, so kNever =
// INT32_MAX is a threshold no accumulator reaches.
constexpr int32_t kAccLimit = std::numeric_limits<int32_t>::max() - 1;
constexpr int32_t kNever = std::numeric_limits<int32_t>::max();
constexpr int32_t kAlways = std::numeric_limits<int32_t>::min();

}  // namespace

Epilogue Epilogue::make(std::vector<float> scale, std::vector<float> bias, bool relu) {
  if (scale.empty())
    throw ArgumentError("Epilogue: scale must have one entry per output channel, got none");
  if (scale.size() != bias.size())
    throw ArgumentError(fmt::format("Epilogue: {} scales but {} biases; expected one of each per output channel",
                                    scale.size(), bias.size()));
  for (std::size_t i = 0; i < scale.size(); ++i) {
    if (!std::isfinite(scale[i]))
      throw ArgumentError(fmt::format("Epilogue: scale[{}] = {} is not finite", i, scale[i]));
    if (!std::isfinite(bias[i]))
      throw ArgumentError(fmt::format("Epilogue: bias[{}] = {} is not finite", i, bias[i]));
  }
  Epilogue e;
  e.channels_ = static_cast<int64_t>(scale.size());
  e.relu_ = relu;
  const auto padded = static_cast<std::size_t>(detail::round_up(e.channels_, detail::kLanes));
  scale.resize(padded, 0.0f);
  bias.resize(padded, 0.0f);
  e.scale_ = std::move(scale);
  e.bias_ = std::move(bias);
  return e;
}

Epilogue Epilogue::float_output(std::vector<float> scale, std::vector<float> bias, bool relu) {
  return make(std::move(scale), std::move(bias), relu);
}

Epilogue Epilogue::identity(int64_t channels) {
  if (channels < 1) throw ArgumentError(fmt::format("Epilogue::identity: channels {} must be >= 1", channels));
  return make(std::vector<float>(static_cast<std::size_t>(channels), 1.0f),
              std::vector<float>(static_cast<std::size_t>(channels), 0.0f), false);
}

Epilogue Epilogue::requantize(std::vector<float> scale, std::vector<float> bias, bool relu,
                              const ActivationQuant& out_quant, int out_border) {
  validate(out_quant, "Epilogue::requantize");
  if (out_border < 0 || out_border > 64)
    throw ArgumentError(fmt::format("Epilogue::requantize: out_border {} outside 0..64", out_border));
  Epilogue e = make(std::move(scale), std::move(bias), relu);
  e.requantize_ = true;
  e.out_quant_ = out_quant;
  e.out_border_ = out_border;
  if (out_quant.bits <= kMaxThresholdBits) e.build_thresholds();
  return e;
}

float Epilogue::value(int64_t oc, int32_t acc) const noexcept {
  // Two separately rounded operations; the kernels library is compiled with -ffp-contract=off
  // so no compiler fuses them into an fma on any path.
  const float t = static_cast<float>(acc) * scale_[static_cast<std::size_t>(oc)];
  float y = t + bias_[static_cast<std::size_t>(oc)];
  if (relu_) y = y > 0.0f ? y : 0.0f;
  return y;
}

uint8_t Epilogue::code(int64_t oc, int32_t acc) const noexcept { return quantize_code(value(oc, acc), out_quant_); }

void Epilogue::build_thresholds() {
  // acc -> code is monotone: float(acc), * scale, + bias, ReLU, / s', round, + z', clamp are
  // each monotone (non-increasing overall when scale < 0). So code >= k exactly when
  // direction * acc >= threshold_k, and each threshold is found by bisection on the definition.
  const int count = threshold_count();
  const int64_t lanes = detail::round_up(channels_, detail::kLanes);
  thresholds_.assign(static_cast<std::size_t>(lanes * (1 + count)), 0);
  for (int64_t oc = 0; oc < lanes; ++oc) {
    const int32_t direction = scale_[static_cast<std::size_t>(oc)] < 0.0f ? -1 : 1;
    int32_t* block = thresholds_.data() + oc / detail::kLanes * detail::kLanes * (1 + count);
    const int64_t lane = oc % detail::kLanes;
    block[lane] = direction;
    auto code_at = [&](int32_t a) { return static_cast<int>(code(oc, direction * a)); };
    for (int k = 1; k <= count; ++k) {
      int32_t threshold;
      if (code_at(-kAccLimit) >= k) {
        threshold = kAlways;
      } else if (code_at(kAccLimit) < k) {
        threshold = kNever;
      } else {
        int64_t lo = -kAccLimit, hi = kAccLimit;  // code(lo) < k <= code(hi)
        while (hi - lo > 1) {
          const int64_t mid = lo + (hi - lo) / 2;
          if (code_at(static_cast<int32_t>(mid)) >= k) hi = mid; else lo = mid;
        }
        threshold = static_cast<int32_t>(hi);
      }
      block[static_cast<int64_t>(k) * detail::kLanes + lane] = threshold;
    }
  }
}

}  // namespace bitmix::kernels
