#include "bitmix/search/dnas.hpp"

#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/functional.hpp"

namespace bitmix::search {
namespace {

std::vector<double> softmax(const Tensor& logits) {
  double max_z = -INFINITY;
  for (int64_t i = 0; i < logits.numel(); ++i) max_z = std::max(max_z, double{logits[i]});
  std::vector<double> p(static_cast<std::size_t>(logits.numel()));
  double sum = 0;
  for (std::size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp(double{logits[static_cast<int64_t>(i)]} - max_z);
  for (double& v : p) v /= sum;
  return p;
}

void add_softmax_gradient(Parameter& logits, const std::vector<double>& p, std::span<const double> grad_p) {
  double mean = 0;
  for (std::size_t i = 0; i < p.size(); ++i) mean += p[i] * grad_p[i];
  for (std::size_t j = 0; j < p.size(); ++j) logits.grad[static_cast<int64_t>(j)] += static_cast<float>(p[j] * (grad_p[j] - mean));
}

double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += double{a[i]} * double{b[i]};
  return s;
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  float* dst = y.data();
  const float* src = x.data();
  for (int64_t i = 0; i < x.numel(); ++i) dst[i] += alpha * src[i];
}

}  // namespace

DnasConvolution::DnasConvolution(const nn::Conv2d& conv, const quant::QuantizerSpec& w_base, std::vector<int> w_bits,
                                 const quant::QuantizerSpec& a_base, std::vector<int> a_bits)
    : w_bits_(std::move(w_bits)),
      a_bits_(std::move(a_bits)),
      strength_w_("strength_w", Tensor({static_cast<int64_t>(w_bits_.size())})),
      strength_a_("strength_a", Tensor({static_cast<int64_t>(a_bits_.size())})) {
  if (w_bits_.empty() || a_bits_.empty()) throw ArgumentError("DNAS layer: no candidate bitwidths");
  for (int b : w_bits_) {
    weights_.push_back(std::make_unique<Parameter>(fmt::format("w{}.weight", b), conv.weight().value));
    quant::QuantizerSpec spec = w_base;
    spec.bits = b;
    w_quantizers_.push_back(std::make_unique<quant::Quantizer>(spec));
    for (Parameter* p : w_quantizers_.back()->parameters()) p->name = fmt::format("w{}.{}", b, p->name);
    for (Buffer* buf : w_quantizers_.back()->buffers()) buf->name = fmt::format("w{}.{}", b, buf->name);
  }
  for (int b : a_bits_) {
    quant::QuantizerSpec spec = a_base;
    spec.bits = b;
    a_quantizers_.push_back(std::make_unique<quant::Quantizer>(spec));
    for (Parameter* p : a_quantizers_.back()->parameters()) p->name = fmt::format("a{}.{}", b, p->name);
    for (Buffer* buf : a_quantizers_.back()->buffers()) buf->name = fmt::format("a{}.{}", b, buf->name);
  }
}

std::vector<Parameter*> DnasConvolution::parameters() {
  std::vector<Parameter*> result = {&strength_w_, &strength_a_};
  for (std::size_t i = 0; i < weights_.size(); ++i) {
    result.push_back(weights_[i].get());
    for (Parameter* p : w_quantizers_[i]->parameters()) result.push_back(p);
  }
  for (auto& q : a_quantizers_)
    for (Parameter* p : q->parameters()) result.push_back(p);
  return result;
}

std::vector<Buffer*> DnasConvolution::buffers() {
  std::vector<Buffer*> result;
  for (auto& q : w_quantizers_)
    for (Buffer* b : q->buffers()) result.push_back(b);
  for (auto& q : a_quantizers_)
    for (Buffer* b : q->buffers()) result.push_back(b);
  return result;
}

void DnasConvolution::set_training(bool training) {
  training_ = training;
  for (auto& q : w_quantizers_) q->set_training(training);
  for (auto& q : a_quantizers_) q->set_training(training);
}

std::vector<double> DnasConvolution::w_probabilities() const { return softmax(strength_w_.value); }
std::vector<double> DnasConvolution::a_probabilities() const { return softmax(strength_a_.value); }

void DnasConvolution::add_probability_gradient(std::span<const double> grad_w, std::span<const double> grad_a) {
  if (grad_w.size() != w_bits_.size() || grad_a.size() != a_bits_.size())
    throw ArgumentError("DNAS layer: probability gradients do not match the candidates");
  add_softmax_gradient(strength_w_, w_probabilities(), grad_w);
  add_softmax_gradient(strength_a_, a_probabilities(), grad_a);
}

const Tensor& DnasConvolution::forward(nn::Conv2d& conv, const Tensor& input) {
  p_ = w_probabilities();
  q_ = a_probabilities();
  const std::size_t nw = w_bits_.size(), na = a_bits_.size();
  quantized_weights_.resize(nw);
  quantized_inputs_.resize(na);
  pair_outputs_.resize(nw * na);
  for (std::size_t i = 0; i < nw; ++i) w_quantizers_[i]->forward(weights_[i]->value, quantized_weights_[i]);
  for (std::size_t j = 0; j < na; ++j) a_quantizers_[j]->forward(input, quantized_inputs_[j]);
  const Tensor* bias = conv.bias() != nullptr ? &conv.bias()->value : nullptr;
  for (std::size_t i = 0; i < nw; ++i)
    for (std::size_t j = 0; j < na; ++j) {
      Tensor& y = pair_outputs_[i * na + j];
      nn::conv2d_forward(quantized_inputs_[j], quantized_weights_[i], bias, conv.options(), y, conv.display_name());
      if (i == 0 && j == 0) {
        nn::ensure_shape(output_, y.shape());
        output_.zero();
      }
      axpy(static_cast<float>(p_[i] * q_[j]), y, output_);
    }
  return output_;
}

const Tensor& DnasConvolution::backward(nn::Conv2d& conv, const Tensor& input, const Tensor& grad_output,
                                        bool need_input_grad) {
  const std::size_t nw = w_bits_.size(), na = a_bits_.size();
  if (pair_outputs_.size() != nw * na) throw Error("DNAS layer: backward called before forward");
  std::vector<double> grad_p(nw, 0.0), grad_q(na, 0.0);
  nn::ensure_shape(grad_input_, input.shape());
  grad_input_.zero();
  std::vector<Tensor> grad_inputs(na, Tensor(input.shape()));
  std::vector<Tensor> grad_weights(nw, Tensor(conv.weight().value.shape()));
  Parameter* bias = conv.bias();
  for (std::size_t i = 0; i < nw; ++i)
    for (std::size_t j = 0; j < na; ++j) {
      const double g_y = dot(grad_output, pair_outputs_[i * na + j]);
      grad_p[i] += q_[j] * g_y;
      grad_q[j] += p_[i] * g_y;
      // One backward convolution per pair, on that pair's scaled output gradient.
      nn::ensure_shape(grad_pair_, grad_output.shape());
      const float scale = static_cast<float>(p_[i] * q_[j]);
      for (int64_t k = 0; k < grad_output.numel(); ++k) grad_pair_[k] = scale * grad_output[k];
      nn::conv2d_backward(quantized_inputs_[j], quantized_weights_[i], grad_pair_, conv.options(), &grad_quantized_input_,
                          &grad_quantized_weight_, bias != nullptr ? &grad_bias_pair_ : nullptr, /*accumulate=*/false,
                          conv.display_name());
      axpy(1.0f, grad_quantized_input_, grad_inputs[j]);
      axpy(1.0f, grad_quantized_weight_, grad_weights[i]);
      if (bias != nullptr) axpy(1.0f, grad_bias_pair_, bias->grad);
    }
  add_softmax_gradient(strength_w_, p_, grad_p);
  add_softmax_gradient(strength_a_, q_, grad_q);
  for (std::size_t i = 0; i < nw; ++i)
    axpy(1.0f, w_quantizers_[i]->backward(weights_[i]->value, grad_weights[i]), weights_[i]->grad);
  for (std::size_t j = 0; j < na; ++j) {
    // Input quantizer parameters need their gradient even when the input's is not needed.
    const Tensor dx = a_quantizers_[j]->backward(input, grad_inputs[j]);
    if (need_input_grad) axpy(1.0f, dx, grad_input_);
  }
  return grad_input_;
}

}  // namespace bitmix::search
