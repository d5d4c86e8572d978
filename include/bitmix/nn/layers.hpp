#pragma once
// The layers: thin modules over the functions of functional.hpp that own parameters, buffers
// and the tensors of the forward/backward pass (see module.hpp for the memory model).

#include <cstdint>
#include <memory>
#include <string>

#include "bitmix/core/rng.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/module.hpp"

namespace bitmix::nn {

// Shared by Conv2d and Linear: the optional weight and input transforms (see TensorTransform).
class TransformSlots {
 public:
  void set_weight_transform(std::unique_ptr<TensorTransform> transform) { weight_transform_ = std::move(transform); }
  void set_input_transform(std::unique_ptr<TensorTransform> transform) { input_transform_ = std::move(transform); }
  TensorTransform* weight_transform() const { return weight_transform_.get(); }
  TensorTransform* input_transform() const { return input_transform_.get(); }

 protected:
  std::unique_ptr<TensorTransform> weight_transform_;
  std::unique_ptr<TensorTransform> input_transform_;
};

class Conv2d;

// Replaces a convolution's own computation, for supernets whose layer is not a single
// convolution: the DNAS baseline of the bitwidth search runs one convolution per candidate
// (weight bits, activation bits) pair, each with its own weight copy. The override owns the
// weights it uses (the layer's own weight is left untouched); its parameters and buffers are
// named "<layer>.override.<name>".
class ConvOverride {
 public:
  virtual ~ConvOverride() = default;
  virtual std::string kind() const = 0;
  virtual const Tensor& forward(Conv2d& conv, const Tensor& input) = 0;
  // Accumulates the gradients of the override's parameters (and of the layer's bias, if it has
  // one); returns dL/dinput, which is only read when `need_input_grad`.
  virtual const Tensor& backward(Conv2d& conv, const Tensor& input, const Tensor& grad_output,
                                 bool need_input_grad) = 0;
  virtual std::vector<Parameter*> parameters() { return {}; }
  virtual std::vector<Buffer*> buffers() { return {}; }
  virtual void set_training(bool /*training*/) {}
};

// 2-D convolution. Parameters "weight" [Cout, Cin/groups, KH, KW] (He-normal initialized,
// std = sqrt(2 / fan_in)) and, with options.bias, "bias" [Cout] (zero). Transform parameters
// are named "weight_transform.<name>" and "input_transform.<name>".
class Conv2d : public Module, public TransformSlots {
 public:
  Conv2d(const Conv2dOptions& options, Rng& rng);
  void reset_parameters(Rng& rng);

  const Conv2dOptions& options() const { return options_; }
  Parameter& weight() { return *weight_; }
  const Parameter& weight() const { return *weight_; }
  Parameter* bias() { return bias_; }
  const Parameter* bias() const { return bias_; }
  // The weight of the last forward after the weight transform (the weight itself without one).
  const Tensor& effective_weight() const { return effective_weight_ != nullptr ? *effective_weight_ : weight_->value; }

  // With an override attached, forward/backward are the override's (see ConvOverride).
  void set_compute_override(std::unique_ptr<ConvOverride> override_computation);
  ConvOverride* compute_override() const { return compute_override_.get(); }

  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;

 protected:
  void on_training_changed(bool training) override;
  void collect_extra(std::vector<std::pair<std::string, Parameter*>>& parameters,
                     std::vector<std::pair<std::string, Buffer*>>& buffers) override;

 private:
  std::unique_ptr<ConvOverride> compute_override_;
  Conv2dOptions options_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  const Tensor* input_ = nullptr;       // as given to forward
  const Tensor* conv_input_ = nullptr;  // after the input transform
  const Tensor* effective_weight_ = nullptr;
  Tensor output_, grad_input_, grad_weight_scratch_;
};

// Fully connected layer: "weight" [out, in], "bias" [out] (PyTorch's default uniform
// initialization, bound 1/sqrt(in)). Inputs of rank > 2 are flattened per sample.
class Linear : public Module, public TransformSlots {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Rng& rng);
  void reset_parameters(Rng& rng);

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  Parameter& weight() { return *weight_; }
  const Parameter& weight() const { return *weight_; }
  Parameter* bias() { return bias_; }
  const Parameter* bias() const { return bias_; }
  const Tensor& effective_weight() const { return effective_weight_ != nullptr ? *effective_weight_ : weight_->value; }

  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;

 protected:
  void on_training_changed(bool training) override;
  void collect_extra(std::vector<std::pair<std::string, Parameter*>>& parameters,
                     std::vector<std::pair<std::string, Buffer*>>& buffers) override;

 private:
  int64_t in_features_, out_features_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  const Tensor* input_ = nullptr;
  const Tensor* linear_input_ = nullptr;
  const Tensor* effective_weight_ = nullptr;
  Tensor output_, grad_input_, grad_weight_scratch_;
};

// Batch normalization over channels: "weight" (gamma, 1), "bias" (beta, 0), buffers
// "running_mean" (0), "running_var" (1). With fused_relu the module computes relu(bn(x)).
// Blocks call forward_residual() to compute relu?(bn(x) + residual) in one pass.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, bool fused_relu = false, BatchNormOptions options = {});

  int64_t channels() const { return channels_; }
  bool fused_relu() const { return fused_relu_; }
  const BatchNormOptions& options() const { return options_; }
  Parameter& weight() { return *gamma_; }
  Parameter& bias() { return *beta_; }
  Buffer& running_mean() { return *running_mean_; }
  Buffer& running_var() { return *running_var_; }
  const Parameter& weight() const { return *gamma_; }
  const Parameter& bias() const { return *beta_; }
  const Buffer& running_mean() const { return *running_mean_; }
  const Buffer& running_var() const { return *running_var_; }

  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;

  // relu?(bn(input) + residual); residual has the input's shape. backward() then also fills
  // residual_grad().
  const Tensor& forward_residual(const Tensor& input, const Tensor& residual);
  const Tensor& residual_grad() const { return grad_residual_; }

 private:
  const Tensor& run_forward(const Tensor& input, const Tensor* residual);

  int64_t channels_;
  bool fused_relu_;
  BatchNormOptions options_;
  Parameter* gamma_;
  Parameter* beta_;
  Buffer* running_mean_;
  Buffer* running_var_;
  const Tensor* input_ = nullptr;
  bool had_residual_ = false;
  bool forward_was_training_ = true;
  BatchNormSaved saved_;
  Tensor output_, grad_input_, grad_residual_;
};

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;

 private:
  Tensor output_, grad_input_;
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Pool2dOptions options) : Module("MaxPool2d"), options_(options) {}
  const Pool2dOptions& options() const { return options_; }
  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;

 private:
  Pool2dOptions options_;
  const Tensor* input_ = nullptr;
  Tensor output_, grad_input_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Pool2dOptions options) : Module("AvgPool2d"), options_(options) {}
  const Pool2dOptions& options() const { return options_; }
  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;

 private:
  Pool2dOptions options_;
  Shape input_shape_;
  Tensor output_, grad_input_;
};

// [N, C, H, W] -> [N, C].
class GlobalAvgPool2d : public Module {
 public:
  GlobalAvgPool2d() : Module("GlobalAvgPool2d") {}
  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;

 private:
  Shape input_shape_;
  Tensor output_, grad_input_;
};

// [N, ...] -> [N, product of the rest].
class Flatten : public Module {
 public:
  Flatten() : Module("Flatten") {}
  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;

 private:
  Shape input_shape_;
  Tensor output_, grad_input_;
};

}  // namespace bitmix::nn
