#include "bitmix/nn/layers.hpp"

#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/error.hpp"

namespace bitmix::nn {
namespace {

void require_forward(const void* input, const Module& m) {
  if (input == nullptr)
    throw Error(fmt::format("{}: backward called before forward", m.display_name()));
}

void add_transform_entries(const char* slot, TensorTransform* t, std::vector<std::pair<std::string, Parameter*>>& ps,
                           std::vector<std::pair<std::string, Buffer*>>& bs) {
  if (t == nullptr) return;
  for (Parameter* p : t->parameters()) ps.emplace_back(std::string(slot) + "." + p->name, p);
  for (Buffer* b : t->buffers()) bs.emplace_back(std::string(slot) + "." + b->name, b);
}

Shape per_image(const Shape& shape) { return Shape(shape.begin() + 1, shape.end()); }

}  // namespace

// ---------------------------------------------------------------------------------------------
Conv2d::Conv2d(const Conv2dOptions& options, Rng& rng) : Module("Conv2d"), options_(options) {
  options_.validate("Conv2d");
  weight_ = &add_parameter("weight", Tensor(options_.weight_shape()));
  if (options_.bias) bias_ = &add_parameter("bias", Tensor({options_.out_channels}));
  reset_parameters(rng);
}

void Conv2d::reset_parameters(Rng& rng) {
  const int64_t fan_in = options_.in_channels / options_.groups * options_.kernel_h * options_.kernel_w;
  const float stddev = std::sqrt(2.0f / static_cast<float>(fan_in));
  for (float& w : weight_->value.values()) w = rng.normal(0.0f, stddev);
  if (bias_ != nullptr) bias_->value.zero();
}

void Conv2d::set_compute_override(std::unique_ptr<ConvOverride> override_computation) {
  compute_override_ = std::move(override_computation);
  if (compute_override_) compute_override_->set_training(training());
}

const Tensor& Conv2d::forward(const Tensor& input) {
  input_ = &input;
  if (compute_override_) return compute_override_->forward(*this, input);
  conv_input_ = input_transform_ ? &input_transform_->forward(input) : &input;
  effective_weight_ = weight_transform_ ? &weight_transform_->forward(weight_->value) : nullptr;
  conv2d_forward(*conv_input_, effective_weight(), bias_ != nullptr ? &bias_->value : nullptr, options_, output_,
                 display_name());
  return output_;
}

const Tensor& Conv2d::backward(const Tensor& grad_output) {
  require_forward(input_, *this);
  if (compute_override_) return compute_override_->backward(*this, *input_, grad_output, input_grad_needed());
  // An input transform may hold parameters, so its input gradient is needed even when ours is not.
  const bool need_dx = input_grad_needed() || input_transform_ != nullptr;
  Tensor* grad_w = weight_transform_ ? &grad_weight_scratch_ : &weight_->grad;
  conv2d_backward(*conv_input_, effective_weight(), grad_output, options_, need_dx ? &grad_input_ : nullptr, grad_w,
                  bias_ != nullptr ? &bias_->grad : nullptr, /*accumulate=*/weight_transform_ == nullptr,
                  display_name());
  if (weight_transform_) {
    const Tensor& g = weight_transform_->backward(weight_->value, grad_weight_scratch_);
    g.expect_shape(weight_->value.shape(), display_name() + ": weight_transform gradient");
    float* dst = weight_->grad.data();
    const float* src = g.data();
    for (int64_t i = 0; i < g.numel(); ++i) dst[i] += src[i];
  }
  if (input_transform_) return input_transform_->backward(*input_, grad_input_);
  return grad_input_;
}

Shape Conv2d::output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers) const {
  const Shape out = options_.output_shape(input_shape, display_name());
  if (layers != nullptr) {
    LayerInfo info;
    info.name = name();
    info.kind = kind();
    info.module = const_cast<Conv2d*>(this);
    info.conv = const_cast<Conv2d*>(this);
    info.input_shape = per_image(input_shape);
    info.output_shape = per_image(out);
    info.macs_per_image = options_.macs_per_image(input_shape[2], input_shape[3]);
    info.weight_count = weight_->value.numel();
    info.parameter_count = info.weight_count + (bias_ != nullptr ? bias_->value.numel() : 0);
    layers->push_back(std::move(info));
  }
  return out;
}

void Conv2d::on_training_changed(bool training) {
  if (weight_transform_) weight_transform_->set_training(training);
  if (input_transform_) input_transform_->set_training(training);
  if (compute_override_) compute_override_->set_training(training);
}

void Conv2d::collect_extra(std::vector<std::pair<std::string, Parameter*>>& parameters,
                           std::vector<std::pair<std::string, Buffer*>>& buffers) {
  add_transform_entries("weight_transform", weight_transform_.get(), parameters, buffers);
  add_transform_entries("input_transform", input_transform_.get(), parameters, buffers);
  if (compute_override_) {
    for (Parameter* p : compute_override_->parameters()) parameters.emplace_back("override." + p->name, p);
    for (Buffer* b : compute_override_->buffers()) buffers.emplace_back("override." + b->name, b);
  }
}

// ---------------------------------------------------------------------------------------------
Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Rng& rng)
    : Module("Linear"), in_features_(in_features), out_features_(out_features) {
  if (in_features <= 0 || out_features <= 0)
    throw ArgumentError(fmt::format("Linear: features must be positive (in {}, out {})", in_features, out_features));
  weight_ = &add_parameter("weight", Tensor({out_features, in_features}));
  if (bias) bias_ = &add_parameter("bias", Tensor({out_features}));
  reset_parameters(rng);
}

void Linear::reset_parameters(Rng& rng) {
  const float bound = 1.0f / std::sqrt(static_cast<float>(in_features_));
  for (float& w : weight_->value.values()) w = rng.uniform(-bound, bound);
  if (bias_ != nullptr)
    for (float& b : bias_->value.values()) b = rng.uniform(-bound, bound);
}

const Tensor& Linear::forward(const Tensor& input) {
  input_ = &input;
  linear_input_ = input_transform_ ? &input_transform_->forward(input) : &input;
  effective_weight_ = weight_transform_ ? &weight_transform_->forward(weight_->value) : nullptr;
  linear_forward(*linear_input_, effective_weight(), bias_ != nullptr ? &bias_->value : nullptr, output_,
                 display_name());
  return output_;
}

const Tensor& Linear::backward(const Tensor& grad_output) {
  require_forward(input_, *this);
  const bool need_dx = input_grad_needed() || input_transform_ != nullptr;
  Tensor* grad_w = weight_transform_ ? &grad_weight_scratch_ : &weight_->grad;
  linear_backward(*linear_input_, effective_weight(), grad_output, need_dx ? &grad_input_ : nullptr, grad_w,
                  bias_ != nullptr ? &bias_->grad : nullptr, weight_transform_ == nullptr, display_name());
  if (weight_transform_) {
    const Tensor& g = weight_transform_->backward(weight_->value, grad_weight_scratch_);
    g.expect_shape(weight_->value.shape(), display_name() + ": weight_transform gradient");
    for (int64_t i = 0; i < g.numel(); ++i) weight_->grad[i] += g[i];
  }
  if (input_transform_) return input_transform_->backward(*input_, grad_input_);
  return grad_input_;
}

Shape Linear::output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers) const {
  if (input_shape.size() < 2)
    throw ShapeError(fmt::format("{}: expected an input [N, {}], got {}", display_name(), in_features_,
                                 shape_to_string(input_shape)));
  const int64_t features = shape_numel(per_image(input_shape));
  if (features != in_features_)
    throw ShapeError(fmt::format("{}: expected {} input features per sample, got input {} ({} features)",
                                 display_name(), in_features_, shape_to_string(input_shape), features));
  if (layers != nullptr) {
    LayerInfo info;
    info.name = name();
    info.kind = kind();
    info.module = const_cast<Linear*>(this);
    info.linear = const_cast<Linear*>(this);
    info.input_shape = {in_features_};
    info.output_shape = {out_features_};
    info.macs_per_image = in_features_ * out_features_;
    info.weight_count = weight_->value.numel();
    info.parameter_count = info.weight_count + (bias_ != nullptr ? bias_->value.numel() : 0);
    layers->push_back(std::move(info));
  }
  return {input_shape[0], out_features_};
}

void Linear::on_training_changed(bool training) {
  if (weight_transform_) weight_transform_->set_training(training);
  if (input_transform_) input_transform_->set_training(training);
}

void Linear::collect_extra(std::vector<std::pair<std::string, Parameter*>>& parameters,
                           std::vector<std::pair<std::string, Buffer*>>& buffers) {
  add_transform_entries("weight_transform", weight_transform_.get(), parameters, buffers);
  add_transform_entries("input_transform", input_transform_.get(), parameters, buffers);
}

// ---------------------------------------------------------------------------------------------
BatchNorm2d::BatchNorm2d(int64_t channels, bool fused_relu, BatchNormOptions options)
    : Module("BatchNorm2d"), channels_(channels), fused_relu_(fused_relu), options_(options) {
  if (channels <= 0) throw ArgumentError(fmt::format("BatchNorm2d: channels = {} must be positive", channels));
  if (!(options.eps > 0.0f)) throw ArgumentError(fmt::format("BatchNorm2d: eps = {} must be positive", options.eps));
  if (!(options.momentum >= 0.0f && options.momentum <= 1.0f))
    throw ArgumentError(fmt::format("BatchNorm2d: momentum = {} must be in [0, 1]", options.momentum));
  gamma_ = &add_parameter("weight", Tensor({channels}, 1.0f));
  beta_ = &add_parameter("bias", Tensor({channels}));
  running_mean_ = &add_buffer("running_mean", Tensor({channels}));
  running_var_ = &add_buffer("running_var", Tensor({channels}, 1.0f));
}

const Tensor& BatchNorm2d::run_forward(const Tensor& input, const Tensor* residual) {
  input_ = &input;
  had_residual_ = residual != nullptr;
  forward_was_training_ = training();
  if (training())
    batch_norm_train_forward(input, gamma_->value, beta_->value, running_mean_->value, running_var_->value, options_,
                             residual, fused_relu_, output_, saved_, display_name());
  else
    batch_norm_eval_forward(input, gamma_->value, beta_->value, running_mean_->value, running_var_->value, options_,
                            residual, fused_relu_, output_, display_name());
  return output_;
}

const Tensor& BatchNorm2d::forward(const Tensor& input) { return run_forward(input, nullptr); }

const Tensor& BatchNorm2d::forward_residual(const Tensor& input, const Tensor& residual) {
  return run_forward(input, &residual);
}

const Tensor& BatchNorm2d::backward(const Tensor& grad_output) {
  require_forward(input_, *this);
  Tensor* grad_input = input_grad_needed() ? &grad_input_ : nullptr;
  Tensor* grad_residual = had_residual_ ? &grad_residual_ : nullptr;
  if (forward_was_training_)
    batch_norm_backward(*input_, gamma_->value, saved_, output_, grad_output, fused_relu_, grad_input, grad_residual,
                        &gamma_->grad, &beta_->grad, true, display_name());
  else
    batch_norm_eval_backward(*input_, gamma_->value, running_mean_->value, running_var_->value, options_, output_,
                             grad_output, fused_relu_, grad_input, grad_residual, &gamma_->grad, &beta_->grad, true,
                             display_name());
  return grad_input_;
}

Shape BatchNorm2d::output_shape(const Shape& input_shape, std::vector<LayerInfo>*) const {
  if ((input_shape.size() != 4 && input_shape.size() != 2) || input_shape[1] != channels_)
    throw ShapeError(fmt::format("{}: expected an input [N, {}, H, W], got {}", display_name(), channels_,
                                 shape_to_string(input_shape)));
  return input_shape;
}

// ---------------------------------------------------------------------------------------------
const Tensor& ReLU::forward(const Tensor& input) {
  relu_forward(input, output_);
  return output_;
}

const Tensor& ReLU::backward(const Tensor& grad_output) {
  relu_backward(output_, grad_output, grad_input_);
  return grad_input_;
}

Shape ReLU::output_shape(const Shape& input_shape, std::vector<LayerInfo>*) const { return input_shape; }

const Tensor& MaxPool2d::forward(const Tensor& input) {
  input_ = &input;
  max_pool2d_forward(input, options_, output_, display_name());
  return output_;
}

const Tensor& MaxPool2d::backward(const Tensor& grad_output) {
  require_forward(input_, *this);
  max_pool2d_backward(*input_, output_, grad_output, options_, grad_input_, display_name());
  return grad_input_;
}

Shape MaxPool2d::output_shape(const Shape& input_shape, std::vector<LayerInfo>*) const {
  return options_.output_shape(input_shape, display_name());
}

const Tensor& AvgPool2d::forward(const Tensor& input) {
  input_shape_ = input.shape();
  avg_pool2d_forward(input, options_, output_, display_name());
  return output_;
}

const Tensor& AvgPool2d::backward(const Tensor& grad_output) {
  avg_pool2d_backward(input_shape_, grad_output, options_, grad_input_, display_name());
  return grad_input_;
}

Shape AvgPool2d::output_shape(const Shape& input_shape, std::vector<LayerInfo>*) const {
  return options_.output_shape(input_shape, display_name());
}

const Tensor& GlobalAvgPool2d::forward(const Tensor& input) {
  input_shape_ = input.shape();
  global_avg_pool_forward(input, output_, display_name());
  return output_;
}

const Tensor& GlobalAvgPool2d::backward(const Tensor& grad_output) {
  global_avg_pool_backward(input_shape_, grad_output, grad_input_, display_name());
  return grad_input_;
}

Shape GlobalAvgPool2d::output_shape(const Shape& input_shape, std::vector<LayerInfo>*) const {
  if (input_shape.size() != 4)
    throw ShapeError(fmt::format("{}: expected an input [N, C, H, W], got {}", display_name(),
                                 shape_to_string(input_shape)));
  return {input_shape[0], input_shape[1]};
}

const Tensor& Flatten::forward(const Tensor& input) {
  input_shape_ = input.shape();
  const int64_t n = input.rank() > 0 ? input.dim(0) : 0;
  ensure_shape(output_, {n, n == 0 ? 0 : input.numel() / n});
  std::copy(input.data(), input.data() + input.numel(), output_.data());
  return output_;
}

const Tensor& Flatten::backward(const Tensor& grad_output) {
  ensure_shape(grad_input_, input_shape_);
  grad_output.expect_shape(output_.shape(), display_name() + ": output gradient");
  std::copy(grad_output.data(), grad_output.data() + grad_output.numel(), grad_input_.data());
  return grad_input_;
}

Shape Flatten::output_shape(const Shape& input_shape, std::vector<LayerInfo>*) const {
  if (input_shape.empty()) throw ShapeError(fmt::format("{}: input has no batch dimension", display_name()));
  return {input_shape[0], shape_numel(per_image(input_shape))};
}

}  // namespace bitmix::nn
