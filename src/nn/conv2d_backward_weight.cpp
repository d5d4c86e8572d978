// The weight gradient of the convolution (see conv2d_backward.hpp): contiguous row dot products
// of the output gradient, laid out on the phase width, against the phase buffer of the input.
#include "bitmix/core/sgemm.hpp"
#include "nn/conv2d_backward.hpp"

namespace bitmix::nn::conv_detail {

void plan_weight_gradient(const Geometry& g, const InputGradient& in, bool has_input_grad, CallWorkspace& ws,
                          WeightGradient& plan) {
  plan.share_padded_grad = has_input_grad && g.unit_stride() && in.width == g.wp;
  plan.length = g.oh * g.qw;
  plan.phase_floats = g.phase_buffer_size();
  plan.ext_count = g.cout * g.oh * g.qw;
  std::vector<int64_t>& in_rows = ws.rows[static_cast<std::size_t>(g.phases)];
  in_rows.resize(static_cast<std::size_t>(g.depth));
  std::size_t r = 0;
  for (int64_t c = 0; c < g.cin_g; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) in_rows[r++] = g.tap_offset(c, i, j);
}

void stage_weight_gradient_image(const Geometry& g, const float* x, const float* dy, float* phases, float* ext) {
  build_phases(x, g, phases);
  if (ext == nullptr) return;
  for (int64_t co = 0; co < g.cout; ++co)
    for (int64_t y = 0; y < g.oh; ++y) {
      float* row = ext + (co * g.oh + y) * g.qw;
      copy_row(row, dy + (co * g.oh + y) * g.ow, g.ow);
      zero_row(row + g.ow, g.qw - g.ow);
    }
}

void weight_gradient_chunk(const Geometry& g, const WeightGradient& plan, const InputGradient& in,
                           const CallWorkspace& ws, int64_t images, const float* in_buf, const float* ext_buf,
                           const float* grad_buf, ThreadScratch& s, bool first, float* partial) {
  const std::vector<int64_t>& in_rows = ws.rows[static_cast<std::size_t>(g.phases)];
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    s.a_rows.resize(static_cast<std::size_t>(images * g.cout_g));
    s.b_rows.resize(static_cast<std::size_t>(images * g.depth));
    for (int64_t slot = 0; slot < images; ++slot) {
      for (int64_t co = 0; co < g.cout_g; ++co) {
        const int64_t channel = grp * g.cout_g + co;
        const float* row = ext_buf != nullptr
                               ? ext_buf + slot * plan.ext_count + channel * g.oh * g.qw
                               : grad_buf + slot * in.padded_count + channel * in.plane + in.top * in.width + in.left;
        s.a_rows[static_cast<std::size_t>(slot * g.cout_g + co)] = row;
      }
      const float* in_slot = in_buf + slot * plan.phase_floats + grp * g.cin_g * g.qplane;
      for (int64_t r = 0; r < g.depth; ++r)
        s.b_rows[static_cast<std::size_t>(slot * g.depth + r)] = in_slot + in_rows[static_cast<std::size_t>(r)];
    }
    sgemm_dot_rows(g.cout_g, g.depth, plan.length, images, s.a_rows, s.b_rows, 1.0f, first ? 0.0f : 1.0f,
                   partial + grp * g.cout_g * g.depth, g.depth);
  }
}

}  // namespace bitmix::nn::conv_detail
