#pragma once
// Test helpers for the runtime: a small random integer model that uses every op kind, and an
// independent reference interpreter that evaluates a Model from its definition (docs/runtime.md)
// with plain loops over integer codes and floats, never calling the kernels' packing or
// convolution code.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <vector>

#include "bitmix/core/rng.hpp"
#include "bitmix/runtime/model.hpp"

namespace bitmix::runtime::testing {

struct TestModel {
  Model model;
  // The weight codes of each conv2d/linear op, by op name, as generated (before packing).
  std::map<std::string, std::vector<int32_t>> codes;
};

inline kernels::ActivationQuant random_quant(Rng& rng, int bits, float scale, bool with_zero_point = false) {
  kernels::ActivationQuant q;
  q.bits = bits;
  q.scale = scale * rng.uniform(0.8f, 1.25f);
  q.zero_point = with_zero_point ? static_cast<int32_t>(rng.below(uint64_t{1} << bits)) : 0;
  q.reciprocal = rng.bernoulli(0.5f);
  return q;
}

struct ConvSpecForTest {
  int64_t out = 8, kernel = 3;
  int stride = 1, pad = 1;
  int bits = 2;
  kernels::WeightEncoding encoding = kernels::WeightEncoding::twos_complement;
  bool relu = true;
  bool requantize = false;
  kernels::ActivationQuant out_quant{};
  int out_border = 0;
  float scale = 0.05f;  // magnitude of the per-channel epilogue scale
  bool depthwise = false;
};

inline int32_t add_conv(ModelBuilder& b, TestModel& tm, Rng& rng, const std::string& name, int32_t x,
                        const ConvSpecForTest& c, bool linear = false) {
  const ValueInfo& in = b.value(x);
  kernels::WeightSpec spec{c.out, in.shape[0], c.kernel, c.kernel, c.bits, c.encoding, c.depthwise};
  std::vector<int32_t> codes(static_cast<std::size_t>(spec.code_count()));
  for (auto& code : codes) {
    const auto u = static_cast<int32_t>(rng.below(uint64_t{1} << c.bits));
    code = c.encoding == kernels::WeightEncoding::twos_complement ? u - (1 << (c.bits - 1))
                                                                  : 2 * u - ((1 << c.bits) - 1);
  }
  std::vector<float> scale(static_cast<std::size_t>(c.out)), bias(scale.size());
  for (std::size_t i = 0; i < scale.size(); ++i) {
    scale[i] = c.scale * rng.uniform(0.5f, 1.5f) * (rng.bernoulli(0.1f) ? -1.0f : 1.0f);
    bias[i] = rng.uniform(-0.5f, 0.5f);
  }
  ConvParams p;
  p.weights = kernels::PackedWeights::pack(codes, spec);
  p.conv = kernels::Conv2dParams{c.stride, c.stride, c.pad, c.pad};
  p.epilogue = c.requantize ? kernels::Epilogue::requantize(scale, bias, c.relu, c.out_quant, c.out_border)
                            : kernels::Epilogue::float_output(scale, bias, c.relu);
  tm.codes[name] = codes;
  LayerNotes notes;
  notes.weight_quantizer = "lsq";
  notes.weight_bits = c.bits;
  notes.weight_scales = {0.125f, 0.25f};
  return linear ? b.linear(name, x, std::move(p), notes) : b.conv2d(name, x, std::move(p), notes);
}

// input [3, 9, 10] (odd and even extents) -> signed 8-bit restricted-range quantize -> stem conv
// -> block with identity shortcut (requantized conv1) -> block with option-A shortcut (stride 2)
// -> block with a projection shortcut -> depthwise conv -> max pool -> global average pool ->
// linear.
inline TestModel make_test_model(uint64_t seed) {
  Rng rng(seed);
  ModelInfo info;
  info.name = "test-net";
  info.architecture = "test";
  info.input_shape = {3, 9, 10};
  info.mean = {0.5f, 0.25f, 0.75f};
  info.stddev = {0.25f, 0.5f, 0.3f};
  info.class_names = {"a", "b", "c", "d", "e"};
  info.extra["source"] = std::string("unit test");
  TestModel tm;
  ModelBuilder b(info);
  QuantizeParams q0;
  q0.quant = kernels::ActivationQuant{8, 0.03f, 128, true};
  q0.border = 1;
  q0.normalize = true;
  q0.min_code = 1;  // a symmetric signed grid: codes 1..255
  q0.max_code = 255;
  int32_t x = b.quantize("stem.input", b.input(), q0);
  ConvSpecForTest stem;
  stem.bits = 8;
  stem.out = 8;
  stem.scale = 0.002f;
  const int32_t s0 = add_conv(b, tm, rng, "stem", x, stem);

  // Block 1: identity shortcut.
  QuantizeParams q1;
  q1.quant = random_quant(rng, 2, 0.5f);
  q1.border = 1;
  x = b.quantize("b1.input", s0, q1);
  ConvSpecForTest c1;
  c1.requantize = true;
  c1.out_quant = random_quant(rng, 3, 0.3f, true);
  c1.out_border = 1;
  c1.scale = 0.1f;
  x = add_conv(b, tm, rng, "b1.conv1", x, c1);
  ConvSpecForTest c2;
  c2.bits = 3;
  c2.encoding = kernels::WeightEncoding::odd_levels;
  c2.relu = false;
  c2.scale = 0.02f;
  const int32_t branch1 = add_conv(b, tm, rng, "b1.conv2", x, c2);
  const int32_t s1 = b.add("b1.add", branch1, s0, AddParams{});

  // Block 2: option-A shortcut (stride 2, 8 -> 16 channels, offset 4).
  QuantizeParams q2;
  q2.quant = random_quant(rng, 1, 0.5f);
  q2.border = 1;
  x = b.quantize("b2.input", s1, q2);
  ConvSpecForTest d1;
  d1.out = 16;
  d1.stride = 2;
  d1.bits = 1;
  d1.encoding = kernels::WeightEncoding::odd_levels;
  d1.requantize = true;
  d1.out_quant = random_quant(rng, 2, 0.4f);
  d1.out_border = 1;
  d1.scale = 0.1f;
  x = add_conv(b, tm, rng, "b2.conv1", x, d1);
  ConvSpecForTest d2;
  d2.out = 16;
  d2.relu = false;
  d2.bits = 4;
  d2.scale = 0.01f;
  const int32_t branch2 = add_conv(b, tm, rng, "b2.conv2", x, d2);
  AddParams a2;
  a2.shortcut = ShortcutKind::subsample_pad;
  a2.stride = 2;
  a2.channel_offset = 4;
  const int32_t s2 = b.add("b2.add", branch2, s1, a2);

  // Block 3: projection shortcut sharing the packed input (border 1, the 1x1 reads padding 0).
  QuantizeParams q3;
  q3.quant = random_quant(rng, 4, 0.2f);
  q3.border = 1;
  const int32_t p3 = b.quantize("b3.input", s2, q3);
  ConvSpecForTest e1;
  e1.out = 16;
  e1.bits = 2;
  e1.requantize = true;
  e1.out_quant = random_quant(rng, 5, 0.05f);
  e1.out_border = 1;
  e1.scale = 0.05f;
  x = add_conv(b, tm, rng, "b3.conv1", p3, e1);
  ConvSpecForTest e2 = d2;
  const int32_t branch3 = add_conv(b, tm, rng, "b3.conv2", x, e2);
  ConvSpecForTest proj;
  proj.out = 16;
  proj.kernel = 1;
  proj.stride = 1;
  proj.pad = 0;
  proj.bits = 2;
  proj.relu = false;
  proj.scale = 0.02f;
  const int32_t sc3 = add_conv(b, tm, rng, "b3.proj", p3, proj);
  const int32_t s3 = b.add("b3.add", branch3, sc3, AddParams{});

  // A depthwise 3x3 layer (multiplier 1) on the block output.
  QuantizeParams q5;
  q5.quant = random_quant(rng, 3, 0.2f, true);
  q5.border = 1;
  x = b.quantize("dw.input", s3, q5);
  ConvSpecForTest dw;
  dw.out = 16;
  dw.bits = 3;
  dw.depthwise = true;
  dw.scale = 0.1f;
  const int32_t d3 = add_conv(b, tm, rng, "dw", x, dw);

  const int32_t pooled = b.max_pool("maxpool", d3, PoolParams{2, 2, 1});
  const int32_t avg = b.global_avg_pool("avgpool", pooled);
  QuantizeParams q4;
  q4.quant = random_quant(rng, 8, 0.01f);
  x = b.quantize("fc.input", avg, q4);
  ConvSpecForTest fc;
  fc.out = 5;
  fc.kernel = 1;
  fc.pad = 0;
  fc.bits = 8;
  fc.relu = false;
  fc.scale = 0.001f;
  const int32_t logits = add_conv(b, tm, rng, "fc", x, fc, /*linear=*/true);
  tm.model = b.finish(logits);
  return tm;
}

// ---- The reference interpreter.

struct RefValue {
  Shape shape;                  // batched
  std::vector<float> real;      // real values
  std::vector<int32_t> codes;   // packed values: one code per element (no border)
  kernels::ActivationQuant quant{};
};

inline int32_t ref_code(float x, const kernels::ActivationQuant& q) {
  const float v = q.reciprocal ? x * (1.0f / q.scale) : x / q.scale;
  if (std::isnan(v)) return 0;
  const float r = std::nearbyint(v);
  const double c = static_cast<double>(r) + q.zero_point;
  return static_cast<int32_t>(std::clamp(c, 0.0, static_cast<double>(q.max_code())));
}

inline float ref_epilogue(int64_t acc, float scale, float bias, bool relu) {
  const float t = static_cast<float>(acc) * scale;
  float y = t + bias;
  if (relu) y = y > 0.0f ? y : 0.0f;
  return y;
}

// Evaluates `model` on `input` (batched), optionally skipping the normalization.
inline std::vector<RefValue> reference_run(const TestModel& tm, const Tensor& input, bool normalized) {
  const Model& m = tm.model;
  const ModelInfo& info = m.info();
  std::vector<RefValue> values(m.values().size());
  values[0].shape = input.shape();
  values[0].real.assign(input.data(), input.data() + input.numel());
  const int64_t n = input.dim(0);
  for (const Op& op : m.ops()) {
    RefValue& out = values[static_cast<std::size_t>(op.output)];
    const ValueInfo& vi = m.values()[static_cast<std::size_t>(op.output)];
    out.shape = {n};
    out.shape.insert(out.shape.end(), vi.shape.begin(), vi.shape.end());
    int64_t count = 1;
    for (int64_t d : out.shape) count *= d;
    const RefValue& x = values[static_cast<std::size_t>(op.inputs[0])];
    switch (op.kind) {
      case OpKind::quantize: {
        const QuantizeParams& q = op.quantize();
        out.quant = q.quant;
        out.codes.resize(static_cast<std::size_t>(count));
        const int64_t c = vi.shape[0], plane = vi.shape[1] * vi.shape[2];
        for (int64_t i = 0; i < count; ++i) {
          float v = x.real[static_cast<std::size_t>(i)];
          if (q.normalize && !normalized) {
            const auto ch = static_cast<std::size_t>((i / plane) % c);
            v = (v - info.mean[ch]) / info.stddev[ch];
          }
          out.codes[static_cast<std::size_t>(i)] = std::clamp(ref_code(v, q.quant), q.min_code, q.max_code);
        }
        break;
      }
      case OpKind::conv2d:
      case OpKind::linear: {
        const ConvParams& c = op.conv();
        const std::vector<int32_t>& w = tm.codes.at(op.name);
        const kernels::WeightSpec& s = c.weights.spec();
        const int64_t cin = x.shape[1], h = x.shape[2], wd = x.shape[3];
        const int64_t oc = s.out_channels;
        const int64_t oh = op.kind == OpKind::linear ? 1 : vi.shape[1], ow = op.kind == OpKind::linear ? 1 : vi.shape[2];
        const kernels::Epilogue& e = c.epilogue;
        if (e.requantizes()) {
          out.quant = e.out_quant();
          out.codes.resize(static_cast<std::size_t>(count));
        } else {
          out.real.resize(static_cast<std::size_t>(count));
        }
        const int32_t z = x.quant.zero_point;
        const int64_t group_in = s.depthwise ? 1 : cin;  // input channels per output channel
        for (int64_t img = 0; img < n; ++img)
          for (int64_t o = 0; o < oc; ++o)
            for (int64_t y = 0; y < oh; ++y)
              for (int64_t xx = 0; xx < ow; ++xx) {
                int64_t acc = 0;
                for (int64_t g = 0; g < group_in; ++g)
                  for (int64_t i = 0; i < s.kernel_h; ++i)
                    for (int64_t j = 0; j < s.kernel_w; ++j) {
                      const int64_t ci = s.depthwise ? o / (oc / cin) : g;
                      const int64_t iy = y * c.conv.stride_h - c.conv.pad_h + i;
                      const int64_t ix = xx * c.conv.stride_w - c.conv.pad_w + j;
                      if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;  // padding: code z, value 0
                      const int32_t code = x.codes[static_cast<std::size_t>(((img * cin + ci) * h + iy) * wd + ix)];
                      acc += int64_t{w[static_cast<std::size_t>(((o * group_in + g) * s.kernel_h + i) * s.kernel_w + j)]} *
                             (code - z);
                    }
                const float yv = ref_epilogue(acc, e.scale()[static_cast<std::size_t>(o)],
                                              e.bias()[static_cast<std::size_t>(o)], e.relu());
                const auto idx = static_cast<std::size_t>(((img * oc + o) * oh + y) * ow + xx);
                if (e.requantizes()) out.codes[idx] = ref_code(yv, e.out_quant());
                else out.real[idx] = yv;
              }
        break;
      }
      case OpKind::add: {
        const AddParams& a = op.add();
        const RefValue& r = values[static_cast<std::size_t>(op.inputs[1])];
        out.real.resize(static_cast<std::size_t>(count));
        const int64_t c = out.shape[1], h = out.shape[2], wd = out.shape[3];
        const int64_t rc = r.shape[1], rh = r.shape[2], rw = r.shape[3];
        for (int64_t img = 0; img < n; ++img)
          for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t y = 0; y < h; ++y)
              for (int64_t xx = 0; xx < wd; ++xx) {
                const auto idx = static_cast<std::size_t>(((img * c + ch) * h + y) * wd + xx);
                float sc = 0.0f;
                const int64_t src = ch - a.channel_offset;
                if (src >= 0 && src < rc)
                  sc = r.real[static_cast<std::size_t>(((img * rc + src) * rh + y * a.stride) * rw + xx * a.stride)];
                const float v = x.real[idx] + sc;
                out.real[idx] = a.relu ? std::max(v, 0.0f) : v;
              }
        break;
      }
      case OpKind::global_avg_pool: {
        out.real.resize(static_cast<std::size_t>(count));
        const int64_t plane = x.shape[2] * x.shape[3];
        for (int64_t q = 0; q < count; ++q) {
          float sum = 0.0f;
          for (int64_t p = 0; p < plane; ++p) sum += x.real[static_cast<std::size_t>(q * plane + p)];
          out.real[static_cast<std::size_t>(q)] = sum * (1.0f / static_cast<float>(plane));
        }
        break;
      }
      case OpKind::max_pool: {
        const PoolParams& p = op.pool();
        out.real.resize(static_cast<std::size_t>(count));
        const int64_t h = x.shape[2], wd = x.shape[3], oh = out.shape[2], ow = out.shape[3];
        for (int64_t q = 0; q < n * out.shape[1]; ++q)
          for (int64_t y = 0; y < oh; ++y)
            for (int64_t xx = 0; xx < ow; ++xx) {
              float best = -INFINITY;
              for (int i = 0; i < p.kernel; ++i)
                for (int j = 0; j < p.kernel; ++j) {
                  const int64_t iy = y * p.stride - p.padding + i, ix = xx * p.stride - p.padding + j;
                  if (iy >= 0 && iy < h && ix >= 0 && ix < wd)
                    best = std::max(best, x.real[static_cast<std::size_t>((q * h + iy) * wd + ix)]);
                }
              out.real[static_cast<std::size_t>((q * oh + y) * ow + xx)] = best;
            }
        break;
      }
      case OpKind::flatten:
        out.real = x.real;
        break;
    }
  }
  return values;
}

inline ::testing::AssertionResult same_floats(const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (std::memcmp(a + i, b + i, sizeof(float)) != 0)
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << b[i];
  return ::testing::AssertionSuccess();
}

inline Tensor random_images(Rng& rng, const Shape& shape) {
  Tensor t(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(rng.below(256)) / 255.0f;
  return t;
}

}  // namespace bitmix::runtime::testing
