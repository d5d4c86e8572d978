#pragma once
// Modules: layers and containers with an explicit forward and backward pass.
//
// Memory model (no autograd tape): forward(x) keeps a pointer to x and returns a reference to
// the module's own output tensor; backward(dy) returns a reference to the module's own input
// gradient. Both stay valid until the next call of the same kind, and x must stay alive and
// unchanged until backward has run. Containers chain these references, so a training step
// copies no activation and, once shapes are stable, allocates nothing.
//
// Names: a module added to a parent gets the hierarchical name "parent.local" ("layer1.0.conv1");
// parameters and buffers are named "<module>.<local>" ("layer1.0.conv1.weight",
// "layer1.0.bn1.running_mean"). Checkpoints and BitConfig files refer to these names.
// Enumeration order is registration order, which every container keeps equal to forward order.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bitmix/core/parameter.hpp"
#include "bitmix/core/tensor.hpp"

namespace bitmix::nn {

class Module;
class Conv2d;
class Linear;

// A differentiable map applied to a layer's weight or input before the layer's own math: a
// fake quantizer for QAT, or the mixture of quantizers of a bitwidth search. Attached to a
// Conv2d or Linear as `weight_transform` / `input_transform`; none attached = plain fp32.
class TensorTransform {
 public:
  virtual ~TensorTransform() = default;
  // Short type name for summaries ("lsq", "dorefa", "ebs-mixture").
  virtual std::string kind() const = 0;
  // y = T(x). Returns the transform's own output tensor, valid until the next forward.
  virtual const Tensor& forward(const Tensor& x) = 0;
  // Given the forward's x and dL/dy: accumulates the gradients of the transform's own
  // parameters and returns dL/dx (the transform's own tensor).
  virtual const Tensor& backward(const Tensor& x, const Tensor& grad_output) = 0;
  // The transform's learnable parameters and persistent buffers, with local names ("step").
  virtual std::vector<Parameter*> parameters() { return {}; }
  virtual std::vector<Buffer*> buffers() { return {}; }
  virtual void set_training(bool training) { training_ = training; }
  bool training() const { return training_; }

 private:
  bool training_ = true;
};

// One quantizable layer (Conv2d or Linear) as seen from a model, in forward order.
struct LayerInfo {
  std::string name;        // "layer1.0.conv1"
  std::string kind;        // "Conv2d" | "Linear"
  Module* module = nullptr;
  Conv2d* conv = nullptr;  // exactly one of conv / linear is set
  Linear* linear = nullptr;
  Shape input_shape;       // per image: [C, H, W] for a convolution, [features] for Linear
  Shape output_shape;
  int64_t macs_per_image = 0;
  int64_t weight_count = 0;     // elements of the weight tensor
  int64_t parameter_count = 0;  // weight + bias
};

class Module {
 public:
  explicit Module(std::string kind) : kind_(std::move(kind)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Type name ("Conv2d", "BasicBlock", "ResNet").
  const std::string& kind() const { return kind_; }
  // Hierarchical name; empty for a root module.
  const std::string& name() const { return name_; }
  // The name, or "<kind> (root)" for a root, for messages.
  std::string display_name() const;

  virtual const Tensor& forward(const Tensor& input) = 0;
  virtual const Tensor& backward(const Tensor& grad_output) = 0;
  // Output shape for an input shape (with the batch dimension), validating every layer on the
  // way; throws ShapeError naming the first layer that does not fit. When `layers` is given,
  // quantizable layers append their LayerInfo to it, in forward order.
  virtual Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const = 0;

  // Training mode (batch statistics in BatchNorm) vs evaluation; applies to the whole subtree
  // and to attached transforms.
  void train(bool training = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  // Whether backward must produce the input gradient. The trainer turns it off for the model's
  // input (the image), which saves the first layer's most expensive backward product.
  virtual void set_input_grad_needed(bool needed) { input_grad_needed_ = needed; }
  bool input_grad_needed() const { return input_grad_needed_; }

  // Direct children with their local names, in forward order.
  const std::vector<std::pair<std::string, std::unique_ptr<Module>>>& children() const { return children_; }
  // Own parameters and buffers (not the children's), local names.
  std::vector<Parameter*> own_parameters() const;
  std::vector<Buffer*> own_buffers() const;

  // The subtree's parameters and buffers with full names ("layer1.0.conv1.weight"), in order.
  std::vector<NamedParameter> named_parameters();
  std::vector<NamedBuffer> named_buffers();
  // Every module of the subtree, this one first (pre-order).
  std::vector<Module*> modules();
  // The module with this hierarchical name below this one ("" is this), or nullptr.
  Module* find(std::string_view path);
  void zero_grad();
  int64_t parameter_count();

  // Quantizable layers (Conv2d, Linear) in forward order for a per-image input shape
  // ([C, H, W]), with shapes, MACs and parameter counts.
  std::vector<LayerInfo> quantizable_layers(const Shape& image_shape) const;

 protected:
  Parameter& add_parameter(std::string local_name, Tensor initial);
  Buffer& add_buffer(std::string local_name, Tensor initial);
  template <typename M>
  M& add_module(std::string local_name, std::unique_ptr<M> child) {
    M& ref = *child;
    adopt(std::move(local_name), std::move(child));
    return ref;
  }
  // Called by train(); modules with attached transforms forward the mode to them.
  virtual void on_training_changed(bool /*training*/) {}
  // Parameters/buffers held outside own_parameters() (attached transforms), with local names
  // relative to this module ("weight_transform.step").
  virtual void collect_extra(std::vector<std::pair<std::string, Parameter*>>& /*parameters*/,
                             std::vector<std::pair<std::string, Buffer*>>& /*buffers*/) {}

 private:
  void adopt(std::string local_name, std::unique_ptr<Module> child);
  void rename(const std::string& name);
  void collect(std::vector<NamedParameter>* parameters, std::vector<NamedBuffer>* buffers);

  std::string kind_;
  std::string name_;
  bool training_ = true;
  bool input_grad_needed_ = true;
  std::vector<std::unique_ptr<Parameter>> parameters_;
  std::vector<std::unique_ptr<Buffer>> buffers_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
};

// Children run one after another; the children are named by the caller ("0", "conv1", ...).
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  // For models that are sequences with a kind of their own ("ResNet", "VGG").
  explicit Sequential(std::string kind) : Module(std::move(kind)) {}
  template <typename M>
  M& append(std::string local_name, std::unique_ptr<M> child) {
    return add_module(std::move(local_name), std::move(child));
  }
  // Appends with the next index as name ("0", "1", ...).
  template <typename M>
  M& append(std::unique_ptr<M> child) {
    return add_module(std::to_string(children().size()), std::move(child));
  }
  std::size_t size() const { return children().size(); }
  Module& at(std::size_t index) const { return *children().at(index).second; }

  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;
  void set_input_grad_needed(bool needed) override;
};

}  // namespace bitmix::nn
