#pragma once
// The searched transform of Efficient Bitwidth Search (EBS): one float tensor (the layer's
// meta weight, or its input activation) quantized to every candidate bitwidth and mixed,
//
//   y = Σ_i p_i Q_{b_i}(x),     p = softmax(α / τ)   (or Gumbel-softmax: softmax((α + g) / τ)),
//
// attached to a Conv2d/Linear as its weight or input transform, so the layer still runs ONE
// convolution on the mixed weight and the mixed input. Nothing is stored per candidate but the
// quantizer's own scalars (LSQ keeps one learnable step per candidate bitwidth, because the
// best step of a 2-bit grid is far from that of a 5-bit grid over the same tensor) and one
// strength logit: memory does not grow with the number of candidates.
//
// Backward, with g = dL/dy:
//   dL/dx   = Σ_i p_i dQ_i/dx ⊙ g                    (each quantizer's STE rule)
//   dL/dp_i = <g, Q_i(x)>
//   dL/dα_j = (1/τ) p_j (dL/dp_j − Σ_i p_i dL/dp_i)  (softmax Jacobian)
//   the step of Q_i receives p_i times its LSQ gradient.
// Candidates whose probability is exactly 0 are skipped, so a one-hot mixture computes exactly
// what the plain quantizer of that bitwidth computes. The other candidates are evaluated together
// in one pass over the tensor each way (quant::mix_forward / mix_backward), not one per candidate.

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bitmix/core/rng.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/quant/quantizer.hpp"

namespace bitmix::search {

class QuantizerMixture : public nn::TensorTransform {
 public:
  // `base` gives the kind, role, granularity, channels and signedness; `bits` the candidate
  // bitwidths (ascending, 1..8). Strength logits start at 0 (uniform probabilities).
  QuantizerMixture(const quant::QuantizerSpec& base, std::vector<int> bits);

  std::string kind() const override { return "ebs-mixture"; }
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& x, const Tensor& grad_output) override;
  // "strength" (the logits α, no weight decay), then each candidate's parameters as
  // "b<bits>.<name>" ("b4.step").
  std::vector<Parameter*> parameters() override;
  std::vector<Buffer*> buffers() override;
  void set_training(bool training) override;

  const std::vector<int>& bits() const { return bits_; }
  std::size_t candidates() const { return bits_.size(); }
  quant::Quantizer& quantizer(std::size_t i) { return *quantizers_[i]; }
  Parameter& strength() { return strength_; }
  std::vector<Parameter*> strength_parameters() { return {&strength_}; }
  // Parameters of the candidate quantizers only (trained with the weights).
  std::vector<Parameter*> quantizer_parameters();

  // softmax(α / τ), without noise.
  std::vector<double> probabilities() const;
  // Σ_i p_i b_i with probabilities().
  double expected_bits() const;
  // The candidate with the largest strength.
  int argmax_bits() const;

  // Adds an external dL/dp (the budget penalty) to the logits' gradient through the softmax
  // Jacobian at probabilities().
  void add_probability_gradient(std::span<const double> grad_probabilities);

  // Softmax temperature τ (> 0) and, with `gumbel`, Gumbel noise drawn from `rng` on every
  // training forward (the search anneals τ). Evaluation always uses the noiseless softmax.
  void set_temperature(double temperature);
  double temperature() const { return temperature_; }
  void set_gumbel(Rng* rng) { gumbel_rng_ = rng; }

  // Makes the mixture one-hot on candidate `index` (logits 0 there, -inf elsewhere), e.g. to
  // evaluate one configuration of the supernet.
  void fix_to(std::size_t index);

 private:
  std::vector<double> softmax(bool with_noise);

  std::vector<int> bits_;
  std::vector<std::unique_ptr<quant::Quantizer>> quantizers_;
  Parameter strength_;
  double temperature_ = 1.0;
  Rng* gumbel_rng_ = nullptr;
  std::vector<double> forward_probabilities_;  // the p used by the last forward
  Tensor output_, grad_input_;
};

}  // namespace bitmix::search
