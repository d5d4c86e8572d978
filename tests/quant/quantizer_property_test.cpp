// Properties every quantizer must have, checked on random tensors for every valid combination
// of kind, role, bitwidth and granularity:
//   - the integer export reproduces the fake-quant output bit for bit, with codes inside the
//     announced encoding and code range;
//   - at most 2^b distinct levels per group;
//   - idempotence Q(Q(x)) = Q(x) wherever the grid does not depend on the data;
//   - quantization error shrinks as bits grow;
//   - per-channel quantization equals per-tensor quantization of each channel alone;
//   - results do not depend on the thread count.

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "bitmix/core/thread_pool.hpp"
#include "bitmix/quant/quantizer.hpp"
#include "quant_test_util.hpp"

namespace bitmix::quant {
namespace {

using testing::gaussian;

constexpr int64_t kChannels = 6;

// Input for a spec: weights ~ N(0, 0.1); activations post-ReLU (or signed) ~ N(0, 1).
Tensor input_for(const QuantizerSpec& spec, uint64_t seed) {
  if (spec.role == Role::weight) return gaussian({kChannels, 4, 3, 3}, seed, 0.1f);
  Tensor x = gaussian({4, kChannels, 5, 5}, seed, 1.0f);
  if (spec.kind == QuantizerKind::dorefa) {
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = 0.5f + 0.4f * x[i];  // mostly inside [0, 1]
  }
  return spec.signed_activations ? x : testing::relu(std::move(x));
}

int64_t max_levels(const QuantizerSpec& spec) {
  switch (spec.kind) {
    case QuantizerKind::binary: return 2;
    case QuantizerKind::ternary: return 3;
    case QuantizerKind::syq: return spec.bits == 1 ? 2 : 3;
    case QuantizerKind::pot: return 2 * ((int64_t{1} << (spec.bits - 1)) - 1) + 1;
    default: return int64_t{1} << spec.bits;
  }
}

bool code_fits_encoding(int32_t code, const QuantParams& p) {
  const int64_t c = code;
  const int b = p.code_bits;
  switch (p.encoding) {
    case CodeEncoding::unsigned_int: return c >= 0 && c <= (int64_t{1} << b) - 1;
    case CodeEncoding::twos_complement: return c >= -(int64_t{1} << (b - 1)) && c <= (int64_t{1} << (b - 1)) - 1;
    case CodeEncoding::odd_levels: return (c & 1) != 0 && c >= -((int64_t{1} << b) - 1) && c <= (int64_t{1} << b) - 1;
  }
  return false;
}

TEST(QuantizerProperties, ExportReproducesFakeQuantExactly) {
  int checked = 0;
  for (const QuantizerSpec& spec : testing::all_valid_specs(kChannels)) {
    if (spec.kind == QuantizerKind::float_bypass) continue;
    SCOPED_TRACE(describe(spec));
    Quantizer q(spec);
    const Tensor x = input_for(spec, 11);
    const Tensor y = q.forward(x);
    const QuantizedTensor exported = q.quantize(x);
    testing::expect_bitwise_equal(exported.dequantize(), y, describe(spec));
    const QuantParams& p = exported.params;
    EXPECT_EQ(p.groups(), spec.groups());
    EXPECT_EQ(p.code_bits, code_bits(spec));
    EXPECT_EQ(p.bits, spec.bits);
    EXPECT_TRUE(code_fits_encoding(p.min_code, p) && code_fits_encoding(p.max_code, p));
    int64_t outside = 0;
    for (int32_t c : exported.codes)
      outside += (c < p.min_code || c > p.max_code || !code_fits_encoding(c, p)) ? 1 : 0;
    EXPECT_EQ(outside, 0);
    if (spec.role == Role::activation) {
      EXPECT_EQ(p.encoding, CodeEncoding::unsigned_int);
    }
    // Weights carry no zero point except with the affine grid.
    if (spec.role == Role::weight && spec.kind != QuantizerKind::uniform) {
      for (int32_t z : p.zero_points) EXPECT_EQ(z, 0);
    }
    // Parameters that do not depend on the data are the same without the tensor.
    if (spec.role == Role::activation || spec.kind == QuantizerKind::lsq) {
      const QuantParams independent = q.params();
      EXPECT_EQ(independent.scales, p.scales);
      EXPECT_EQ(independent.zero_points, p.zero_points);
    }
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

TEST(QuantizerProperties, AtMostTwoToTheBitsLevelsPerGroup) {
  for (const QuantizerSpec& spec : testing::all_valid_specs(kChannels)) {
    if (spec.kind == QuantizerKind::float_bypass) continue;
    SCOPED_TRACE(describe(spec));
    Quantizer q(spec);
    const Tensor x = input_for(spec, 12);
    const Tensor y = q.forward(x);
    const int64_t groups = spec.groups();
    const int64_t per_group = y.numel() / groups;
    for (int64_t g = 0; g < groups; ++g) {
      std::set<float> levels(y.data() + g * per_group, y.data() + (g + 1) * per_group);
      EXPECT_LE(static_cast<int64_t>(levels.size()), max_levels(spec)) << "group " << g;
    }
  }
}

TEST(QuantizerProperties, IdempotentWhenTheGridIsFixed) {
  // Q(Q(x)) = Q(x) holds for a fixed grid. It is checked with frozen state (calibrated ranges,
  // LSQ steps, PACT alpha, DoReFa's fixed activation grid) and for the data-dependent kinds whose
  // grid Q(x) reproduces (binary: mean|Q(x)| = alpha; ternary; power-of-two: max|Q(x)| is the top
  // level; SYQ: a learned scale, and the dead zone of Q(x) keeps its zeros). SAWB, DSConv (a
  // least-squares scale, recomputed in float) and DoReFa weights recompute a different grid from
  // Q(x) by design.
  for (const QuantizerSpec& spec : testing::all_valid_specs(kChannels)) {
    const QuantizerKind k = spec.kind;
    if (k == QuantizerKind::sawb || k == QuantizerKind::dsconv || (k == QuantizerKind::dorefa && spec.role == Role::weight && spec.bits > 1)) continue;
    SCOPED_TRACE(describe(spec));
    Quantizer q(spec);
    const Tensor x = input_for(spec, 13);
    q.forward(x);  // initializes LSQ steps and activation ranges
    if (q.accepts_range() && (k == QuantizerKind::uniform || k == QuantizerKind::symmetric)) {
      // Freeze the range the first call used.
      const QuantParams p = q.params(x);
      (void)p;
      std::vector<float> lo(static_cast<std::size_t>(spec.groups())), hi(lo.size());
      for (std::size_t g = 0; g < lo.size(); ++g) {
        lo[g] = q.buffers()[0]->value[static_cast<int64_t>(g)];
        hi[g] = q.buffers()[1]->value[static_cast<int64_t>(g)];
      }
      q.set_range(lo, hi);
    }
    q.set_training(false);
    const Tensor y = q.forward(x);
    testing::expect_bitwise_equal(q.forward(y), y, describe(spec));
  }
}

double mean_squared_error(const Tensor& a, const Tensor& b) {
  double sum = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    sum += d * d;
  }
  return sum / static_cast<double>(a.numel());
}

TEST(QuantizerProperties, ErrorShrinksAsBitsGrow) {
  // DoReFa weights approximate tanh(w) / max|tanh(w)|, not w; the other kinds approximate x.
  const Tensor w = gaussian({16, 8, 3, 3}, 21, 0.05f);
  const Tensor a = testing::relu(gaussian({8, 16, 6, 6}, 22, 1.0f));
  Tensor a_unit = a;
  for (int64_t i = 0; i < a_unit.numel(); ++i) a_unit[i] = std::min(a_unit[i] / 3.0f, 1.0f);
  Tensor w_normalized = w;
  float max_tanh = 0.0f;
  for (int64_t i = 0; i < w.numel(); ++i) max_tanh = std::max(max_tanh, std::fabs(std::tanh(w[i])));
  for (int64_t i = 0; i < w.numel(); ++i) w_normalized[i] = std::tanh(w[i]) / max_tanh;

  for (QuantizerKind kind : all_quantizer_kinds()) {
    for (Role role : {Role::weight, Role::activation}) {
      double previous = INFINITY;
      int previous_bits = 0;
      for (int bits = kMinBits; bits <= kMaxBits; ++bits) {
        QuantizerSpec spec = role == Role::weight ? weight_spec(kind, bits) : activation_spec(kind, bits);
        if (kind == QuantizerKind::float_bypass || kind == QuantizerKind::inq || !check(spec).empty()) continue;
        if (kind == QuantizerKind::dorefa && role == Role::weight && bits == 1) continue;  // a different family
        SCOPED_TRACE(describe(spec));
        Quantizer q(spec);
        const Tensor& x = role == Role::weight ? w : (kind == QuantizerKind::dorefa ? a_unit : a);
        const Tensor& target = (kind == QuantizerKind::dorefa && role == Role::weight) ? w_normalized : x;
        const double error = mean_squared_error(q.forward(x), target);
        if (previous_bits > 0) {
          EXPECT_LT(error, previous) << bits << " bits vs " << previous_bits;
        }
        previous = error;
        previous_bits = bits;
      }
    }
  }
}

TEST(QuantizerProperties, PerChannelEqualsPerTensorOnEachChannel) {
  const Tensor w = gaussian({kChannels, 3, 3, 3}, 31, 0.1f);
  const int64_t per_channel = w.numel() / kChannels;
  for (const QuantizerSpec& spec : testing::all_valid_specs(kChannels)) {
    if (spec.granularity != Granularity::per_channel) continue;
    if (spec.kind == QuantizerKind::dsconv) continue;  // per channel only (blocks within each channel)
    SCOPED_TRACE(describe(spec));
    Quantizer whole(spec);
    const Tensor y = whole.forward(w);
    const Tensor grad = gaussian(w.shape(), 32);
    const Tensor gx = whole.backward(w, grad);
    for (int64_t c = 0; c < kChannels; ++c) {
      QuantizerSpec single = spec;
      single.granularity = Granularity::per_tensor;
      single.channels = 1;
      Quantizer part(single);
      const Tensor slice({per_channel}, std::span<const float>(w.data() + c * per_channel, per_channel));
      const Tensor grad_slice({per_channel}, std::span<const float>(grad.data() + c * per_channel, per_channel));
      const Tensor ys = part.forward(slice);
      const Tensor gs = part.backward(slice, grad_slice);
      for (int64_t i = 0; i < per_channel; ++i) {
        ASSERT_TRUE(testing::bitwise_equal(ys[i], y[c * per_channel + i])) << "channel " << c << " element " << i;
        ASSERT_NEAR(gs[i], gx[c * per_channel + i], 1e-6f * (1.0f + std::fabs(gs[i]))) << "channel " << c;
      }
      for (std::size_t p = 0; p < part.parameters().size(); ++p)
        EXPECT_NEAR(part.parameters()[p]->grad[0], whole.parameters()[p]->grad[c], 1e-5f);
    }
  }
}

TEST(QuantizerProperties, ResultsDoNotDependOnTheThreadCount) {
  // Large enough to be split over threads; gradients of learnable parameters are reductions.
  const Tensor x = gaussian({8, 16, 32, 32}, 41, 1.0f);
  const Tensor g = gaussian(x.shape(), 42, 1.0f);
  const int saved_threads = num_threads();
  for (QuantizerKind kind : {QuantizerKind::lsq, QuantizerKind::pact, QuantizerKind::uniform}) {
    std::vector<Tensor> outputs, grads;
    std::vector<float> param_grads;
    for (int threads : {1, 2, 3}) {
      set_num_threads(threads);
      QuantizerSpec spec = activation_spec(kind, 4, kind != QuantizerKind::pact);
      Quantizer q(spec);
      outputs.push_back(q.forward(x));
      grads.push_back(q.backward(x, g));
      param_grads.push_back(q.parameters().empty() ? 0.0f : q.parameters()[0]->grad[0]);
    }
    for (std::size_t i = 1; i < outputs.size(); ++i) {
      testing::expect_bitwise_equal(outputs[i], outputs[0], std::string(to_string(kind)) + " forward");
      testing::expect_bitwise_equal(grads[i], grads[0], std::string(to_string(kind)) + " backward");
      EXPECT_TRUE(testing::bitwise_equal(param_grads[i], param_grads[0])) << to_string(kind);
    }
  }
  set_num_threads(saved_threads);
}

TEST(QuantizerProperties, NonFiniteInputsGiveDefinedCodes) {
  // Bad values must not crash or produce out-of-range codes (the float-to-int conversion of a NaN
  // would be undefined behaviour).
  Tensor x({6}, {NAN, INFINITY, -INFINITY, 1.0f, -1.0f, 0.5f});
  for (QuantizerKind kind : {QuantizerKind::lsq, QuantizerKind::symmetric, QuantizerKind::sawb, QuantizerKind::pot,
                             QuantizerKind::ternary, QuantizerKind::binary, QuantizerKind::dorefa}) {
    Quantizer q(weight_spec(kind, kind == QuantizerKind::binary ? 1 : 2));
    const QuantizedTensor e = q.quantize(x);
    for (int32_t c : e.codes) {
      EXPECT_GE(c, e.params.min_code) << to_string(kind);
      EXPECT_LE(c, e.params.max_code) << to_string(kind);
    }
  }
}

}  // namespace
}  // namespace bitmix::quant
