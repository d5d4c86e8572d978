#pragma once
// The DNAS-style baseline the EBS search is compared against (Wu et al. 2018, "Mixed precision
// quantization of ConvNets via differentiable neural architecture search"): every candidate
// weight bitwidth has its OWN copy of the weights, and every (weight bits, activation bits)
// pair its own convolution,
//
//   y = Σ_i Σ_j p_i q_j conv(Q^a_j(x), Q^w_i(W_i)),
//
// computed and differentiated pair by pair, as an autograd framework would. Memory holds the
// weight copies, every quantized input Q^a_j(x) and every pair's output; time grows with the
// number of pairs. EBS removes both (docs/search.md).

#include <memory>
#include <vector>

#include "bitmix/nn/layers.hpp"
#include "bitmix/quant/quantizer.hpp"

namespace bitmix::search {

class DnasConvolution : public nn::ConvOverride {
 public:
  // Weight copies start from the layer's current weight. `w_base` / `a_base` give the
  // quantizer kinds and granularity; `w_bits` / `a_bits` the candidates.
  DnasConvolution(const nn::Conv2d& conv, const quant::QuantizerSpec& w_base, std::vector<int> w_bits,
                  const quant::QuantizerSpec& a_base, std::vector<int> a_bits);

  std::string kind() const override { return "dnas"; }
  const Tensor& forward(nn::Conv2d& conv, const Tensor& input) override;
  const Tensor& backward(nn::Conv2d& conv, const Tensor& input, const Tensor& grad_output,
                         bool need_input_grad) override;
  // "strength_w", "strength_a", then per weight candidate "w<b>.weight", "w<b>.step", and per
  // activation candidate "a<b>.step".
  std::vector<Parameter*> parameters() override;
  std::vector<Buffer*> buffers() override;
  void set_training(bool training) override;

  const std::vector<int>& w_bits() const { return w_bits_; }
  const std::vector<int>& a_bits() const { return a_bits_; }
  std::vector<double> w_probabilities() const;
  std::vector<double> a_probabilities() const;
  void add_probability_gradient(std::span<const double> grad_w, std::span<const double> grad_a);
  Parameter& weight_copy(std::size_t i) { return *weights_[i]; }
  quant::Quantizer& weight_quantizer(std::size_t i) { return *w_quantizers_[i]; }
  quant::Quantizer& input_quantizer(std::size_t j) { return *a_quantizers_[j]; }

 private:
  std::vector<int> w_bits_, a_bits_;
  Parameter strength_w_, strength_a_;
  std::vector<std::unique_ptr<Parameter>> weights_;
  std::vector<std::unique_ptr<quant::Quantizer>> w_quantizers_, a_quantizers_;
  bool training_ = true;
  // Saved by forward for the backward pass, as an autograd framework would keep them.
  std::vector<Tensor> quantized_weights_, quantized_inputs_, pair_outputs_;
  std::vector<double> p_, q_;
  Tensor output_, grad_input_, grad_pair_, grad_quantized_input_, grad_quantized_weight_, grad_bias_pair_;
};

}  // namespace bitmix::search
