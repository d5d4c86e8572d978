#pragma once
// Several quantizers of one tensor mixed in one pass: the EBS search's y = Σ_i w_i Q_i(x)
// (one quantizer per candidate bitwidth) and its backward.
//
// A loop of Quantizer calls reads the tensor once per quantizer in the forward pass and twice
// per quantizer in the backward pass (dot_output, backward_accumulate). These functions read it
// once each way, and give bit for bit what that loop gives: the same operations on every
// element in the same order (candidates summed left to right from 0), and the same reductions
// (fixed per block and lane, so independent of the thread count and the ISA).
//
// The quantizers must share kind, role, granularity, channels and signedness (bitwidths and
// learned state differ). Sets whose plans the fused kernels do not cover run the loop instead,
// with the same results: LSQ with a 1-bit weight candidate among wider ones (its grid differs)
// and the backward of DoReFa weights of 2+ bits (not elementwise). mix_passes() tells which.

#include <span>

#include "bitmix/core/tensor.hpp"
#include "bitmix/quant/quantizer.hpp"

namespace bitmix::quant {

// y = Σ_i weights[i] * Q_i(x), bit for bit
//   y = zeros(x.shape()); for (i...) quantizers[i]->forward_accumulate(x, weights[i], y);
// including the state updates of forward (data-driven initialization, range observers).
// `y` is reshaped if needed and must not be `x`. ArgumentError for an empty or mismatched set,
// a repeated quantizer or a weight count other than one per quantizer; ShapeError for a
// per-channel quantizer whose channels are not x's axis 0.
void mix_forward(std::span<Quantizer* const> quantizers, std::span<const float> weights, const Tensor& x, Tensor& y);

// The backward of mix_forward with grad_output = dL/dy, bit for bit
//   grad_input = zeros(x.shape());
//   for (i...) {
//     grad_weights[i] = quantizers[i]->dot_output(x, grad_output);          // dL/dweights[i]
//     quantizers[i]->backward_accumulate(x, grad_output, weights[i], grad_input);
//   }
// so every quantizer's parameter gradients receive weights[i] times their gradient. No state
// update. `grad_input` is reshaped if needed and must be neither `x` nor `grad_output`;
// grad_weights has one entry per quantizer.
void mix_backward(std::span<Quantizer* const> quantizers, std::span<const float> weights, const Tensor& x,
                  const Tensor& grad_output, Tensor& grad_input, std::span<double> grad_weights);

// Whether mix_forward and mix_backward would make one pass over x for this set (else they run
// the loop above). Checks the set like mix_forward; no state update.
struct MixPasses {
  bool forward = false;
  bool backward = false;
};
MixPasses mix_passes(std::span<Quantizer* const> quantizers, const Tensor& x);

}  // namespace bitmix::quant
