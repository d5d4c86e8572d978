// 2-D convolution forward on the core sgemm: per image, the input is copied once into a
// zero-padded buffer (its phase planes when strided, see conv2d_geometry.hpp) and the
// convolution is one GEMM per group, weights [Cout_g x Cin_g*KH*KW] (packed once per call) times
// the im2col matrix of the padded image, which sgemm reads through offset tables
// (SgemmIndexedB): the im2col matrix is only ever materialized sliver by sliver inside the GEMM's
// packing, in cache.
#include <vector>

#include "bitmix/core/sgemm.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/functional.hpp"
#include "nn/conv2d_geometry.hpp"

namespace bitmix::nn {

using namespace conv_detail;

namespace {

CallWorkspace& forward_workspace() {
  thread_local CallWorkspace w;
  return w;
}

void add_bias(float* out, const float* bias, int64_t channels, int64_t pixels) {
  for (int64_t c = 0; c < channels; ++c) {
    const float b = bias[c];
    float* row = out + c * pixels;
    for (int64_t p = 0; p < pixels; ++p) row[p] += b;
  }
}

}  // namespace

void conv2d_forward(const Tensor& input, const Tensor& weight, const Tensor* bias, const Conv2dOptions& options,
                    Tensor& output, std::string_view layer) {
  check_conv_shapes(input, weight, bias, options, layer);
  const Geometry g = make_geometry(input.shape(), options);
  ensure_shape(output, {g.n, g.cout, g.oh, g.ow});
  if (g.n == 0) return;

  CallWorkspace& ws = forward_workspace();
  std::vector<SgemmPackedA>& packed = ws.packed;
  if (packed.size() < static_cast<std::size_t>(g.groups)) packed.resize(static_cast<std::size_t>(g.groups));
  for (int64_t grp = 0; grp < g.groups; ++grp)
    packed[static_cast<std::size_t>(grp)].pack(Transpose::no, g.cout_g, g.depth, weight.data() + grp * g.cout_g * g.depth,
                                               g.depth);
  ws.rows.resize(1);
  ws.cols.resize(1);
  std::vector<int64_t>& rows = ws.rows[0];
  std::vector<int64_t>& cols = ws.cols[0];
  input_offsets(g, rows, cols);
  // Stride 1 without padding reads the input in place.
  const bool in_place = g.unit_stride() && g.ph == 0 && g.pw == 0;

  auto run_image = [&](int64_t img) {
    const float* base = input.data() + img * g.cin * g.h * g.w;
    if (!in_place) {
      float* phases = sized(scratch().a, g.phase_buffer_size());
      build_phases(base, g, phases);
      base = phases;
    }
    float* out = output.data() + img * g.cout * g.out_pixels;
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      sgemm(packed[static_cast<std::size_t>(grp)], SgemmIndexedB{base + grp * g.cin_g * g.qplane, rows, cols}, 1.0f,
            0.0f, out + grp * g.cout_g * g.out_pixels, g.out_pixels);
    }
    if (bias != nullptr) add_bias(out, bias->data(), g.cout, g.out_pixels);
  };
  if (g.n >= num_threads()) {
    parallel_for(g.n, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) run_image(i);
    });
  } else {
    for (int64_t i = 0; i < g.n; ++i) run_image(i);  // the GEMMs split the image's columns
  }
}

}  // namespace bitmix::nn
