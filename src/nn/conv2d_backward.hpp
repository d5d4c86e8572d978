#pragma once
// Internal to the convolution's backward pass: conv2d_backward.cpp (the driver: shape checks, the
// bias gradient, the split of the batch over threads and the sum of the per-thread weight
// gradients) calls the input gradient (conv2d_backward_input.cpp) and the weight gradient
// (conv2d_backward_weight.cpp) image by image.
#include <cstdint>
#include <vector>

#include "nn/conv2d_geometry.hpp"

namespace bitmix::nn::conv_detail {

// ---- Input gradient as a stride-1 transposed convolution per phase of the padded input:
// phase (ry, rx) of the padded input gradient is
//   dxp[c][a * sh + ry][b * sw + rx] = sum_{o, t, u} W[o][c][ry + sh t][rx + sw u] * dY[o][a - t][b - u],
// a GEMM of the rearranged weights [Cin_g x Cout_g * Ty * Tx] with the output gradient,
// zero-padded and read through offsets, over the (a, b) that fall inside the unpadded image.
// With stride 1 there is one phase and the GEMM writes the input gradient directly; otherwise
// the phases are interleaved into it afterwards.
struct InputGradient {
  struct Phase {
    int64_t ty = 0, tx = 0;      // kernel taps
    int64_t a_lo = 0, na = 0;    // padded rows a_lo .. a_lo + na - 1 (unpadded y = a * sh + ry - ph)
    int64_t b_lo = 0, nb = 0;
    bool computed() const { return ty != 0 && tx != 0 && na != 0 && nb != 0; }
  };
  std::vector<Phase> phase;  // sh * sw, index ry * sw + rx
  // The zero-padded output gradient of one image: dY[a - t] is at row a - t + top of a
  // height x width plane (top zero rows above it, left zero columns before it).
  int64_t top = 0, left = 0, height = 0, width = 0, plane = 0;
  int64_t padded_count = 0;           // floats of it, every channel plus slack
  int64_t phase_out_total = 0;        // floats of the per-image phase results (strided only)
  std::vector<int64_t> phase_offset;  // each phase's block in them
  // Zeros standing in for a phase that no kernel tap reaches (a kernel smaller than the stride).
  std::vector<float> zeros;
};

// Plans the phases and the padded output gradient; when `pack`, also rearranges and packs the
// weights of every phase and group into ws.packed[p * groups + group] and the GEMM offsets into
// ws.rows[p] / ws.cols[p]. ws.rows and ws.cols get sh * sw + 1 entries (the last: the weight
// gradient's).
void plan_input_gradient(const Geometry& g, const Tensor& weight, bool pack, CallWorkspace& ws, InputGradient& plan);

// The input gradient dx of one image from its output gradient dy. padded_grad: plan.padded_count
// floats, left holding dy zero-padded (the weight gradient may read it); phase_out:
// plan.phase_out_total floats (unused with stride 1).
void input_gradient_image(const Geometry& g, const InputGradient& plan, const CallWorkspace& ws, const float* dy,
                          float* padded_grad, float* phase_out, float* dx);

// ---- Weight gradient: a sum of row dot products (sgemm_dot_rows), row co of the output
// gradient laid out on the phase width (qw), zero in the columns past ow, against the rows of the
// phase buffer shifted by each kernel offset, summed over the images of a thread.
struct WeightGradient {
  // A stride-1 "same" convolution (KH - 1 = 2 * pad) takes the rows straight from the padded
  // output gradient of the input gradient: its rows already have the padded input's width.
  bool share_padded_grad = false;
  int64_t length = 0;         // floats per dot product: oh * qw
  int64_t phase_floats = 0;   // floats of one image's phase buffer
  int64_t ext_count = 0;      // floats of one image's output gradient on the phase width
};

// Plans the weight gradient; the kernel taps' offsets go to ws.rows[sh * sw] (after
// plan_input_gradient).
void plan_weight_gradient(const Geometry& g, const InputGradient& in, bool has_input_grad, CallWorkspace& ws,
                          WeightGradient& plan);

// Stages one image: its phase buffer (WeightGradient::phase_floats floats at `phases`) and, when
// `ext` is given (not shared), its output gradient on the phase width (ext_count floats).
void stage_weight_gradient_image(const Geometry& g, const float* x, const float* dy, float* phases, float* ext);

// partial (+)= the weight gradient of `images` staged images: slot i's phase buffer at
// in_buf + i * phase_floats, its output gradient rows in ext_buf (or, shared, in the padded
// output gradients at grad_buf + i * in.padded_count). Overwrites partial when `first`.
void weight_gradient_chunk(const Geometry& g, const WeightGradient& plan, const InputGradient& in,
                           const CallWorkspace& ws, int64_t images, const float* in_buf, const float* ext_buf,
                           const float* grad_buf, ThreadScratch& s, bool first, float* partial);

}  // namespace bitmix::nn::conv_detail
