#include "runtime/float_ops.hpp"

#include <algorithm>
#include <limits>

#include "bitmix/core/thread_pool.hpp"

namespace bitmix::runtime::detail {
namespace {
// Planes per parallel chunk: at least ~32K elements, so that the small tensors of a batch-1
// run stay on one thread (a fork-join costs more than adding 16K floats, and far more when
// the machine is busy and a worker has been descheduled).
int64_t plane_grain(int64_t plane) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, plane)); }
}  // namespace

void prepare_quantize_input(const Tensor& x, const std::vector<float>* mean, const std::vector<float>* stddev,
                            bool clamp, float lo, float hi, Tensor& out) {
  const Shape& s = out.shape();
  const int64_t channels = s[1], plane = s[2] * s[3], planes = s[0] * s[1];
  const float* src = x.data();
  float* dst = out.data();
  parallel_for(planes, plane_grain(plane), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const float* in = src + q * plane;
      float* o = dst + q * plane;
      if (mean != nullptr) {
        // The data loader's formula, (pixel - mean) / std, so that pixels p / 255 give the very
        // floats the model was evaluated on.
        const float m = (*mean)[static_cast<std::size_t>(q % channels)];
        const float d = (*stddev)[static_cast<std::size_t>(q % channels)];
        for (int64_t p = 0; p < plane; ++p) o[p] = (in[p] - m) / d;
      } else {
        std::copy(in, in + plane, o);
      }
      if (clamp)
        for (int64_t p = 0; p < plane; ++p) {
          float v = o[p] >= lo ? o[p] : lo;  // NaN -> lo, as quant's clamp does
          o[p] = v <= hi ? v : hi;
        }
    }
  });
}

namespace {
template <int kStride>
void subsampled_row(const float* __restrict in, const float* __restrict shortcut, float* out, int64_t width, bool relu) {
  if (relu)
    for (int64_t x = 0; x < width; ++x) out[x] = std::max(in[x] + shortcut[x * kStride], 0.0f);
  else
    for (int64_t x = 0; x < width; ++x) out[x] = in[x] + shortcut[x * kStride];
}
}  // namespace

void residual_add(const Tensor& branch, const Tensor& shortcut, const AddParams& params, Tensor& out) {
  const Shape& b = branch.shape();
  const Shape& s = shortcut.shape();
  const int64_t channels = b[1], height = b[2], width = b[3], plane = height * width;
  const int64_t src_channels = s[1], src_height = s[2], src_width = s[3];
  const bool relu = params.relu;
  const float* bd = branch.data();
  const float* sd = shortcut.data();
  float* od = out.data();
  parallel_for(b[0] * channels, plane_grain(plane), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t n = q / channels, c = q % channels;
      const float* in = bd + q * plane;
      float* o = od + q * plane;
      if (params.shortcut == ShortcutKind::identity) {
        const float* r = sd + q * plane;
        // nn's order: (conv-and-BatchNorm value) + residual, then max(v, 0).
        if (relu)
          for (int64_t p = 0; p < plane; ++p) o[p] = std::max(in[p] + r[p], 0.0f);
        else
          for (int64_t p = 0; p < plane; ++p) o[p] = in[p] + r[p];
        continue;
      }
      const int64_t sc = c - params.channel_offset;
      if (sc < 0 || sc >= src_channels) {  // a zero channel of the option-A shortcut: v + 0
        if (relu)
          for (int64_t p = 0; p < plane; ++p) o[p] = std::max(in[p] + 0.0f, 0.0f);
        else
          for (int64_t p = 0; p < plane; ++p) o[p] = in[p] + 0.0f;
        continue;
      }
      const float* r = sd + (n * src_channels + sc) * src_height * src_width;
      const int64_t stride = params.stride;
      for (int64_t y = 0; y < height; ++y) {
        const float* rr = r + y * stride * src_width;
        const float* ii = in + y * width;
        float* oo = o + y * width;
        if (stride == 2)  // ResNets: a constant stride lets the compiler vectorize the even-lane loads
          subsampled_row<2>(ii, rr, oo, width, relu);
        else if (stride == 1)
          subsampled_row<1>(ii, rr, oo, width, relu);
        else
          for (int64_t xx = 0; xx < width; ++xx) {
            const float v = ii[xx] + rr[xx * stride];
            oo[xx] = relu ? std::max(v, 0.0f) : v;
          }
      }
    }
  });
}

void global_avg_pool(const Tensor& x, Tensor& out) {
  const Shape& s = x.shape();
  const int64_t planes = s[0] * s[1], plane = s[2] * s[3];
  const Shape shape{s[0], s[1], 1, 1};
  if (out.shape() != shape) out = Tensor(shape);
  const float inv = 1.0f / static_cast<float>(plane);
  const float* src = x.data();
  float* dst = out.data();
  parallel_for(planes, plane_grain(plane), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const float* p = src + q * plane;
      float sum = 0.0f;  // sequential, as nn's global average pooling
      for (int64_t i = 0; i < plane; ++i) sum += p[i];
      dst[q] = sum * inv;
    }
  });
}

void max_pool(const Tensor& x, const PoolParams& params, Tensor& out) {
  const Shape& s = x.shape();
  const int64_t height = s[2], width = s[3];
  const int64_t k = params.kernel, st = params.stride, pad = params.padding;
  const int64_t oh = (height + 2 * pad - k) / st + 1, ow = (width + 2 * pad - k) / st + 1;
  const Shape shape{s[0], s[1], oh, ow};
  if (out.shape() != shape) out = Tensor(shape);
  const float* src = x.data();
  float* dst = out.data();
  parallel_for(s[0] * s[1], plane_grain(height * width), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const float* p = src + q * height * width;
      float* o = dst + q * oh * ow;
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t xx = 0; xx < ow; ++xx) {
          float best = -std::numeric_limits<float>::infinity();
          for (int64_t i = 0; i < k; ++i) {
            const int64_t iy = y * st - pad + i;
            if (iy < 0 || iy >= height) continue;
            for (int64_t j = 0; j < k; ++j) {
              const int64_t ix = xx * st - pad + j;
              if (ix < 0 || ix >= width) continue;
              best = std::max(best, p[iy * width + ix]);
            }
          }
          o[y * ow + xx] = best;
        }
    }
  });
}

}  // namespace bitmix::runtime::detail
