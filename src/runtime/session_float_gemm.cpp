// Session: convolutions run as a float GEMM over integer-valued operands (FloatGemmPolicy),
// typically the first layer, whose 8-bit codes make the bit-serial kernels slow.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>

#include "bitmix/core/thread_pool.hpp"
#include "bitmix/kernels/conv.hpp"
#include "core/float_ops.hpp"
#include "runtime/session_float_gemm.hpp"

namespace bitmix::runtime {
namespace {

// Round half to even for |v| <= 2^22 (std::nearbyint in the default rounding mode): adding
// 1.5 * 2^23 leaves no fraction bits. Callers clamp first.
inline float round_half_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

}  // namespace

void Session::plan_float_gemm() {
  const std::vector<Op>& ops = model_.ops();
  const std::vector<ValueInfo>& values = model_.values();
  dense_.clear();
  dense_.resize(ops.size());
  skip_.assign(ops.size(), false);
  if (options_.float_gemm == FloatGemmPolicy::never) return;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    if (op.kind != OpKind::conv2d) continue;
    const int32_t in = op.inputs[0];
    if (in < 1 || ops[static_cast<std::size_t>(in - 1)].kind != OpKind::quantize) continue;
    const ConvParams& c = op.conv();
    const kernels::WeightSpec& w = c.weights.spec();
    const ValueInfo& iv = values[static_cast<std::size_t>(in)];
    if (w.depthwise) continue;
    if (options_.float_gemm == FloatGemmPolicy::narrow_inputs && iv.shape[0] > 4) continue;
    const QuantizeParams& q = ops[static_cast<std::size_t>(in - 1)].quantize();
    const std::vector<int32_t> codes = c.weights.codes();
    int64_t max_w = 0;
    for (int32_t code : codes) max_w = std::max<int64_t>(max_w, code < 0 ? -int64_t{code} : code);
    const int64_t max_a = std::max<int64_t>(std::abs(q.min_code - q.quant.zero_point), std::abs(q.max_code - q.quant.zero_point));
    const int64_t k = w.in_channels * w.kernel_h * w.kernel_w;
    if (k * max_w * max_a >= (int64_t{1} << 24)) continue;  // the float sum might round
    auto d = std::make_unique<DenseConv>();
    d->quantize_op = static_cast<std::size_t>(in - 1);
    d->channels = iv.shape[0];
    d->height = iv.shape[1];
    d->width = iv.shape[2];
    d->padded_h = d->height + 2 * c.conv.pad_h;
    d->padded_w = d->width + 2 * c.conv.pad_w;
    const ValueInfo& ov = values[static_cast<std::size_t>(op.output)];
    d->out_channels = w.out_channels;
    d->out_h = ov.shape[1];
    d->out_w = ov.shape[2];
    d->weights.assign(codes.begin(), codes.end());
    d->packed.pack(Transpose::no, w.out_channels, k, d->weights.data(), k);
    d->rows.resize(static_cast<std::size_t>(k));
    for (int64_t ch = 0; ch < w.in_channels; ++ch)
      for (int64_t y = 0; y < w.kernel_h; ++y)
        for (int64_t x = 0; x < w.kernel_w; ++x)
          d->rows[static_cast<std::size_t>((ch * w.kernel_h + y) * w.kernel_w + x)] =
              (ch * d->padded_h + y) * d->padded_w + x;
    d->cols.resize(static_cast<std::size_t>(d->out_h * d->out_w));
    for (int64_t y = 0; y < d->out_h; ++y)
      for (int64_t x = 0; x < d->out_w; ++x)
        d->cols[static_cast<std::size_t>(y * d->out_w + x)] = y * c.conv.stride_h * d->padded_w + x * c.conv.stride_w;
    dense_[i] = std::move(d);
  }
  // A quantize op whose every consumer runs as a float GEMM need not run (it still runs with
  // keep_values, so that its codes can be inspected).
  if (options_.keep_values) return;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind != OpKind::quantize) continue;
    const auto value = static_cast<int32_t>(i + 1);
    bool needed = false;
    for (std::size_t j = 0; j < ops.size() && !needed; ++j)
      for (int32_t v : ops[j].inputs)
        if (v == value && dense_[j] == nullptr) needed = true;
    skip_[i] = !needed;
  }
}

void Session::run_dense_conv(std::size_t index, const Tensor& src, bool normalized, Tensor* real_out,
                             kernels::PackedActivations* packed_out) {
  DenseConv& d = *dense_[index];
  const Op& op = model_.ops()[index];
  const QuantizeParams& q = model_.ops()[d.quantize_op].quantize();
  const kernels::Epilogue& e = op.conv().epilogue;
  const ModelInfo& info = model_.info();
  const int64_t batch = src.dim(0);
  const Shape out_shape{batch, d.out_channels, d.out_h, d.out_w};
  Tensor& out = real_out != nullptr ? *real_out : d.epilogue_out;
  if (out.shape() != out_shape) out = Tensor(out_shape);
  if (d.packed.isa() != active_isa())  // the ISA cap changed since the weights were packed
    d.packed.pack(Transpose::no, d.out_channels, static_cast<int64_t>(d.rows.size()), d.weights.data(),
                  static_cast<int64_t>(d.rows.size()));
  const bool normalize = q.normalize && !normalized;
  const ClampRange clamp = clamp_[d.quantize_op];
  const int32_t z = q.quant.zero_point;
  const float lo_t = static_cast<float>(-z - 1), hi_t = static_cast<float>(q.quant.max_code() - z + 1);
  const float k_min = static_cast<float>(q.min_code - z), k_max = static_cast<float>(q.max_code - z);
  const float scale = q.quant.scale, inverse = 1.0f / q.quant.scale;
  const bool reciprocal = q.quant.reciprocal;
  const int64_t plane = d.height * d.width, padded_plane = d.padded_h * d.padded_w;
  const int64_t pad_h = (d.padded_h - d.height) / 2, pad_w = (d.padded_w - d.width) / 2;
  const int64_t out_plane = d.out_h * d.out_w;
  const SgemmIndexedB b_shape{nullptr, d.rows, d.cols};

  auto one_image = [&](int64_t n, std::vector<float>& padded) {
    padded.assign(static_cast<std::size_t>(d.channels * padded_plane), 0.0f);  // padding: code z, value 0
    for (int64_t c = 0; c < d.channels; ++c) {
      const float* in = src.data() + (n * d.channels + c) * plane;
      const float m = normalize ? info.mean[static_cast<std::size_t>(c)] : 0.0f;
      const float s = normalize ? info.stddev[static_cast<std::size_t>(c)] : 1.0f;
      for (int64_t y = 0; y < d.height; ++y) {
        float* row = padded.data() + c * padded_plane + (y + pad_h) * d.padded_w + pad_w;
        const float* src_row = in + y * d.width;
        // The quantize op's code (kernels::quantize_code, then the clamp of its code range)
        // minus the zero point, in float: the quantize op's input preparation, then
        // branch-free passes that vectorize.
        float_ops::prepare_row(src_row, d.width, normalize, m, s, clamp.active, clamp.lo, clamp.hi, row);
        if (reciprocal)
          for (int64_t x = 0; x < d.width; ++x) row[x] *= inverse;
        else
          for (int64_t x = 0; x < d.width; ++x) row[x] /= scale;
        for (int64_t x = 0; x < d.width; ++x) {
          float t = row[x] >= lo_t ? row[x] : lo_t;  // NaN -> below the range -> code 0, as quantize_code
          t = t <= hi_t ? t : hi_t;
          const float k = round_half_even(t);
          const float lower = k >= k_min ? k : k_min;
          row[x] = lower <= k_max ? lower : k_max;
        }
      }
    }
    float* acc = out.data() + n * d.out_channels * out_plane;
    SgemmIndexedB b = b_shape;
    b.base = padded.data();
    sgemm(d.packed, b, 1.0f, 0.0f, acc, out_plane);
    // The epilogue, as the kernels define it: two roundings, ReLU mapping NaN and -0 to +0.
    for (int64_t oc = 0; oc < d.out_channels; ++oc) {
      const float sc = e.scale()[static_cast<std::size_t>(oc)], bi = e.bias()[static_cast<std::size_t>(oc)];
      float* p = acc + oc * out_plane;
      if (e.relu()) {
        for (int64_t k = 0; k < out_plane; ++k) {
          const float t2 = p[k] * sc;
          const float y = t2 + bi;
          p[k] = y > 0.0f ? y : 0.0f;
        }
      } else {
        for (int64_t k = 0; k < out_plane; ++k) {
          const float t2 = p[k] * sc;
          p[k] = t2 + bi;
        }
      }
    }
  };
  const int threads = num_threads();
  if (d.padded.size() < static_cast<std::size_t>(threads)) d.padded.resize(static_cast<std::size_t>(threads));
  if (batch > 1 && threads > 1) {
    parallel_run([&](int t, int count) {
      for (int64_t n = batch * t / count; n < batch * (t + 1) / count; ++n) one_image(n, d.padded[static_cast<std::size_t>(t)]);
    });
  } else {
    for (int64_t n = 0; n < batch; ++n) one_image(n, d.padded[0]);
  }
  if (packed_out != nullptr) kernels::quantize_pack(out, e.out_quant(), e.out_border(), *packed_out);
}

}  // namespace bitmix::runtime
