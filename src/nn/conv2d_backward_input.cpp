// The input gradient of the convolution (see conv2d_backward.hpp): per phase of the padded
// input, a GEMM of the rearranged weights with the zero-padded output gradient, read through
// offsets; strided convolutions then interleave the phases into the input gradient.
#include <algorithm>

#include "bitmix/core/sgemm.hpp"
#include "nn/conv2d_backward.hpp"

namespace bitmix::nn::conv_detail {

void plan_input_gradient(const Geometry& g, const Tensor& weight, bool pack, CallWorkspace& ws, InputGradient& plan) {
  const std::size_t phase_count = static_cast<std::size_t>(g.phases);
  plan.phase.assign(phase_count, InputGradient::Phase{});
  int64_t gtop = 0, gleft = 0, a_end = g.oh, b_end = g.ow;
  auto first_at_least = [](int64_t lo, int64_t r, int64_t s) {  // smallest a >= 0 with a * s + r >= lo
    return lo <= r ? int64_t{0} : (lo - r + s - 1) / s;
  };
  for (int64_t ry = 0; ry < g.sh; ++ry)
    for (int64_t rx = 0; rx < g.sw; ++rx) {
      InputGradient::Phase& ph = plan.phase[static_cast<std::size_t>(ry * g.sw + rx)];
      ph.ty = phase_taps(ry, g.sh, g.kh);
      ph.tx = phase_taps(rx, g.sw, g.kw);
      ph.a_lo = first_at_least(g.ph, ry, g.sh);
      ph.na = std::max<int64_t>(0, first_at_least(g.ph + g.h, ry, g.sh) - ph.a_lo);
      ph.b_lo = first_at_least(g.pw, rx, g.sw);
      ph.nb = std::max<int64_t>(0, first_at_least(g.pw + g.w, rx, g.sw) - ph.b_lo);
      if (!ph.computed()) continue;
      gtop = std::max(gtop, ph.ty - 1 - ph.a_lo);
      gleft = std::max(gleft, ph.tx - 1 - ph.b_lo);
      a_end = std::max(a_end, ph.a_lo + ph.na);
      b_end = std::max(b_end, ph.b_lo + ph.nb);
    }
  plan.top = gtop;
  plan.left = gleft;
  plan.height = a_end + gtop;
  plan.width = b_end + gleft;
  plan.plane = plan.height * plan.width;
  plan.padded_count = g.cout * plan.plane + plan.width + g.kw;
  const std::size_t packed_count = phase_count * static_cast<std::size_t>(g.groups);
  if (ws.packed.size() < packed_count) ws.packed.resize(packed_count);
  ws.rows.resize(phase_count + 1);
  ws.cols.resize(phase_count + 1);
  plan.phase_out_total = 0;
  plan.phase_offset.assign(phase_count, 0);
  plan.zeros.assign(static_cast<std::size_t>(g.w + 8), 0.0f);
  if (!pack) return;
  const int64_t gw = plan.width, g_plane = plan.plane;
  for (int64_t ry = 0; ry < g.sh; ++ry)
    for (int64_t rx = 0; rx < g.sw; ++rx) {
      const std::size_t p = static_cast<std::size_t>(ry * g.sw + rx);
      const InputGradient::Phase& ph = plan.phase[p];
      if (!ph.computed()) continue;
      plan.phase_offset[p] = plan.phase_out_total;
      plan.phase_out_total += g.cin * ph.na * ph.nb;
      const int64_t depth = g.cout_g * ph.ty * ph.tx;
      ws.rearranged.resize(static_cast<std::size_t>(g.cin_g * depth));
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const float* wg = weight.data() + grp * g.cout_g * g.depth;
        for (int64_t ci = 0; ci < g.cin_g; ++ci)
          for (int64_t co = 0; co < g.cout_g; ++co)
            for (int64_t t = 0; t < ph.ty; ++t)
              for (int64_t u = 0; u < ph.tx; ++u)
                ws.rearranged[static_cast<std::size_t>(ci * depth + (co * ph.ty + t) * ph.tx + u)] =
                    wg[((co * g.cin_g + ci) * g.kh + ry + g.sh * t) * g.kw + rx + g.sw * u];
        ws.packed[p * static_cast<std::size_t>(g.groups) + static_cast<std::size_t>(grp)].pack(
            Transpose::no, g.cin_g, depth, ws.rearranged.data(), depth);
      }
      std::vector<int64_t>& rows = ws.rows[p];
      std::vector<int64_t>& cols = ws.cols[p];
      rows.clear();
      for (int64_t co = 0; co < g.cout_g; ++co)
        for (int64_t t = 0; t < ph.ty; ++t)
          for (int64_t u = 0; u < ph.tx; ++u) rows.push_back(co * g_plane + (gtop - t) * gw + (gleft - u));
      cols.clear();
      for (int64_t a = ph.a_lo; a < ph.a_lo + ph.na; ++a)
        for (int64_t b = ph.b_lo; b < ph.b_lo + ph.nb; ++b) cols.push_back(a * gw + b);
    }
}

void input_gradient_image(const Geometry& g, const InputGradient& plan, const CallWorkspace& ws, const float* dy,
                          float* padded_grad, float* phase_out, float* dx) {
  const int64_t g_plane = plan.plane;
  pad_planes(dy, g.cout, g.oh, g.ow, plan.top, plan.left, plan.height, plan.width, plan.width + g.kw, padded_grad);
  if (g.unit_stride()) {
    for (int64_t grp = 0; grp < g.groups; ++grp)
      sgemm(ws.packed[static_cast<std::size_t>(grp)],
            SgemmIndexedB{padded_grad + grp * g.cout_g * g_plane, ws.rows[0], ws.cols[0]}, 1.0f, 0.0f,
            dx + grp * g.cin_g * g.h * g.w, g.h * g.w);
    return;
  }
  for (int64_t ry = 0; ry < g.sh; ++ry)
    for (int64_t rx = 0; rx < g.sw; ++rx) {
      const std::size_t p = static_cast<std::size_t>(ry * g.sw + rx);
      const InputGradient::Phase& ph = plan.phase[p];
      if (ph.na == 0 || ph.nb == 0) continue;
      const int64_t y0 = ph.a_lo * g.sh + ry - g.ph, x0 = ph.b_lo * g.sw + rx - g.pw;
      const int64_t pixels = ph.na * ph.nb;
      if (ph.ty == 0 || ph.tx == 0) {  // no kernel tap lands on these pixels
        if (g.sw == 2) continue;
        for (int64_t c = 0; c < g.cin; ++c)
          for (int64_t i = 0; i < ph.na; ++i)
            for (int64_t j = 0; j < ph.nb; ++j) dx[(c * g.h + y0 + i * g.sh) * g.w + x0 + j * g.sw] = 0.0f;
        continue;
      }
      for (int64_t grp = 0; grp < g.groups; ++grp)
        sgemm(ws.packed[p * static_cast<std::size_t>(g.groups) + static_cast<std::size_t>(grp)],
              SgemmIndexedB{padded_grad + grp * g.cout_g * g_plane, ws.rows[p], ws.cols[p]}, 1.0f, 0.0f,
              phase_out + plan.phase_offset[p] + grp * g.cin_g * pixels, pixels);
      if (g.sw == 2) continue;  // zipped below, two column phases at once
      // Interleave: phase pixel (i, j) is input pixel (y0 + i sh, x0 + j sw).
      for (int64_t c = 0; c < g.cin; ++c)
        for (int64_t i = 0; i < ph.na; ++i)
          scatter_row(dx + (c * g.h + y0 + i * g.sh) * g.w + x0,
                      phase_out + plan.phase_offset[p] + (c * ph.na + i) * ph.nb, ph.nb, g.sw);
    }
  if (g.sw != 2) return;
  // Each input row takes its even and odd columns from the two column phases of its row phase;
  // a phase without taps contributes zeros.
  for (int64_t c = 0; c < g.cin; ++c)
    for (int64_t y = 0; y < g.h; ++y) {
      const int64_t yp = y + g.ph, ry = yp % g.sh;
      const float* src[2];
      for (int64_t rx = 0; rx < 2; ++rx) {
        const std::size_t p = static_cast<std::size_t>(ry * 2 + rx);
        const InputGradient::Phase& ph = plan.phase[p];
        const int64_t x0 = ph.b_lo * 2 + rx - g.pw;  // 0 or 1
        const int64_t i = yp / g.sh - ph.a_lo;
        src[x0] = (ph.ty == 0 || ph.tx == 0) ? plan.zeros.data()
                                             : phase_out + plan.phase_offset[p] + (c * ph.na + i) * ph.nb;
      }
      zip_row(dx + (c * g.h + y) * g.w, g.w, src[0], src[1]);
    }
}

}  // namespace bitmix::nn::conv_detail
