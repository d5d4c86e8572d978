// 2-D convolution backward (see conv2d_backward.hpp for the two gradients).
//
// Threads split the batch; each thread runs chunks of its images through the input gradient
// and stages them for the weight gradient, accumulates a partial weight gradient over its
// images, and the partials are summed in thread order (deterministic for a given thread count).
// The bias gradient is a per-channel sum, parallel over channels (independent of the thread
// count).
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/functional.hpp"
#include "nn/conv2d_backward.hpp"

namespace bitmix::nn {

using namespace conv_detail;

namespace {
CallWorkspace& backward_workspace() {
  thread_local CallWorkspace w;
  return w;
}
}  // namespace

void conv2d_backward(const Tensor& input, const Tensor& weight, const Tensor& grad_output, const Conv2dOptions& options,
                     Tensor* grad_input, Tensor* grad_weight, Tensor* grad_bias, bool accumulate,
                     std::string_view layer) {
  check_conv_shapes(input, weight, nullptr, options, layer);
  const Geometry g = make_geometry(input.shape(), options);
  grad_output.expect_shape({g.n, g.cout, g.oh, g.ow}, fmt::format("{}: output gradient", layer));
  if (grad_input != nullptr) ensure_shape(*grad_input, input.shape());
  if (grad_weight != nullptr) {
    if (accumulate) grad_weight->expect_shape(options.weight_shape(), fmt::format("{}: weight gradient", layer));
    else ensure_shape(*grad_weight, options.weight_shape());
  }
  if (grad_bias != nullptr) {
    if (accumulate) grad_bias->expect_shape({g.cout}, fmt::format("{}: bias gradient", layer));
    else ensure_shape(*grad_bias, {g.cout});
  }

  if (grad_bias != nullptr) {
    float* gb = grad_bias->data();
    parallel_for(g.cout, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double sum = 0;
        for (int64_t img = 0; img < g.n; ++img) {
          const float* row = grad_output.data() + (img * g.cout + c) * g.out_pixels;
          float partial = 0;
          for (int64_t p = 0; p < g.out_pixels; ++p) partial += row[p];
          sum += double{partial};
        }
        gb[c] = (accumulate ? gb[c] : 0.0f) + static_cast<float>(sum);
      }
    });
  }
  if (grad_input == nullptr && grad_weight == nullptr) return;
  if (g.n == 0) {
    if (grad_weight != nullptr && !accumulate) grad_weight->zero();
    return;
  }

  CallWorkspace& ws = backward_workspace();
  InputGradient in;
  plan_input_gradient(g, weight, grad_input != nullptr, ws, in);
  WeightGradient wg;
  if (grad_weight != nullptr) plan_weight_gradient(g, in, grad_input != nullptr, ws, wg);
  const bool unit = g.unit_stride();
  // Images per chunk: enough for dot products of ~4K floats per kernel tap.
  const int64_t dw_length = g.oh * g.qw;
  const int64_t chunk_max = std::clamp<int64_t>((4096 + dw_length - 1) / dw_length, 1, 64);

  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), g.n));
  const int64_t wsize = g.cout * g.depth;
  std::vector<AlignedVector<float>>& partials = ws.partials;
  if (partials.size() < static_cast<std::size_t>(threads)) partials.resize(static_cast<std::size_t>(threads));
  std::vector<char> used_partial(static_cast<std::size_t>(threads), 0);

  parallel_run(
      [&](int t, int thread_count) {
        const int64_t i_begin = g.n * t / thread_count, i_end = g.n * (t + 1) / thread_count;
        if (i_begin >= i_end) return;
        ThreadScratch& s = scratch();
        float* partial = nullptr;
        if (grad_weight != nullptr) {
          partials[static_cast<std::size_t>(t)].resize(static_cast<std::size_t>(wsize));
          partial = partials[static_cast<std::size_t>(t)].data();
          used_partial[static_cast<std::size_t>(t)] = 1;
        }
        const int64_t chunk = std::min(chunk_max, i_end - i_begin);
        float* in_buf = grad_weight != nullptr ? sized(s.a, chunk * wg.phase_floats) : nullptr;
        float* grad_buf = grad_input != nullptr ? sized(s.b, chunk * in.padded_count) : nullptr;
        float* ext_buf = (grad_weight != nullptr && !wg.share_padded_grad) ? sized(s.c, chunk * wg.ext_count) : nullptr;
        float* phase_out = (grad_input != nullptr && !unit) ? sized(s.d, in.phase_out_total) : nullptr;
        bool first_chunk = true;
        for (int64_t c0 = i_begin; c0 < i_end; c0 += chunk) {
          const int64_t c1 = std::min(i_end, c0 + chunk);
          for (int64_t img = c0; img < c1; ++img) {
            const int64_t slot = img - c0;
            const float* x = input.data() + img * g.cin * g.h * g.w;
            const float* dy = grad_output.data() + img * g.cout * g.out_pixels;
            if (grad_input != nullptr)
              input_gradient_image(g, in, ws, dy, grad_buf + slot * in.padded_count, phase_out,
                                   grad_input->data() + img * g.cin * g.h * g.w);
            if (grad_weight != nullptr)
              stage_weight_gradient_image(g, x, dy, in_buf + slot * wg.phase_floats,
                                          ext_buf != nullptr ? ext_buf + slot * wg.ext_count : nullptr);
          }
          if (grad_weight == nullptr) continue;
          weight_gradient_chunk(g, wg, in, ws, c1 - c0, in_buf, ext_buf, grad_buf, s, first_chunk, partial);
          first_chunk = false;
        }
      },
      threads);

  if (grad_weight != nullptr) {
    float* gw_out = grad_weight->data();
    parallel_for(wsize, 4096, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        float sum = accumulate ? gw_out[e] : 0.0f;
        for (int t = 0; t < threads; ++t)
          if (used_partial[static_cast<std::size_t>(t)]) sum += partials[static_cast<std::size_t>(t)][static_cast<std::size_t>(e)];
        gw_out[e] = sum;
      }
    });
  }
}

}  // namespace bitmix::nn
