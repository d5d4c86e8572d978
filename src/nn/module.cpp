#include "bitmix/nn/module.hpp"

#include <fmt/format.h>

#include "bitmix/core/error.hpp"

namespace bitmix::nn {

std::string Module::display_name() const { return name_.empty() ? kind_ + " (root)" : name_; }

void Module::train(bool training) {
  training_ = training;
  on_training_changed(training);
  for (auto& [local, child] : children_) child->train(training);
}

std::vector<Parameter*> Module::own_parameters() const {
  std::vector<Parameter*> out;
  for (const auto& p : parameters_) out.push_back(p.get());
  return out;
}

std::vector<Buffer*> Module::own_buffers() const {
  std::vector<Buffer*> out;
  for (const auto& b : buffers_) out.push_back(b.get());
  return out;
}

void Module::collect(std::vector<NamedParameter>* parameters, std::vector<NamedBuffer>* buffers) {
  const std::string prefix = name_.empty() ? "" : name_ + ".";
  if (parameters != nullptr)
    for (const auto& p : parameters_) parameters->push_back({prefix + p->name, p.get()});
  if (buffers != nullptr)
    for (const auto& b : buffers_) buffers->push_back({prefix + b->name, b.get()});
  std::vector<std::pair<std::string, Parameter*>> extra_parameters;
  std::vector<std::pair<std::string, Buffer*>> extra_buffers;
  collect_extra(extra_parameters, extra_buffers);
  if (parameters != nullptr)
    for (auto& [local, p] : extra_parameters) parameters->push_back({prefix + local, p});
  if (buffers != nullptr)
    for (auto& [local, b] : extra_buffers) buffers->push_back({prefix + local, b});
  for (auto& [local, child] : children_) child->collect(parameters, buffers);
}

std::vector<NamedParameter> Module::named_parameters() {
  std::vector<NamedParameter> out;
  collect(&out, nullptr);
  return out;
}

std::vector<NamedBuffer> Module::named_buffers() {
  std::vector<NamedBuffer> out;
  collect(nullptr, &out);
  return out;
}

std::vector<Module*> Module::modules() {
  std::vector<Module*> out{this};
  for (auto& [local, child] : children_) {
    std::vector<Module*> sub = child->modules();
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

Module* Module::find(std::string_view path) {
  if (path.empty()) return this;
  const std::size_t dot = path.find('.');
  const std::string_view head = path.substr(0, dot);
  for (auto& [local, child] : children_)
    if (local == head) return dot == std::string_view::npos ? child.get() : child->find(path.substr(dot + 1));
  return nullptr;
}

void Module::zero_grad() {
  for (NamedParameter& p : named_parameters()) p.parameter->zero_grad();
}

int64_t Module::parameter_count() {
  int64_t count = 0;
  for (NamedParameter& p : named_parameters()) count += p.parameter->value.numel();
  return count;
}

std::vector<LayerInfo> Module::quantizable_layers(const Shape& image_shape) const {
  Shape input{1};
  input.insert(input.end(), image_shape.begin(), image_shape.end());
  std::vector<LayerInfo> layers;
  output_shape(input, &layers);
  return layers;
}

Parameter& Module::add_parameter(std::string local_name, Tensor initial) {
  for (const auto& p : parameters_)
    if (p->name == local_name)
      throw ArgumentError(fmt::format("{}: parameter '{}' registered twice", display_name(), local_name));
  parameters_.push_back(std::make_unique<Parameter>(std::move(local_name), std::move(initial)));
  return *parameters_.back();
}

Buffer& Module::add_buffer(std::string local_name, Tensor initial) {
  for (const auto& b : buffers_)
    if (b->name == local_name)
      throw ArgumentError(fmt::format("{}: buffer '{}' registered twice", display_name(), local_name));
  buffers_.push_back(std::make_unique<Buffer>(Buffer{std::move(local_name), std::move(initial)}));
  return *buffers_.back();
}

void Module::adopt(std::string local_name, std::unique_ptr<Module> child) {
  if (local_name.empty() || local_name.find('.') != std::string::npos)
    throw ArgumentError(fmt::format("{}: child name '{}' must be non-empty and contain no '.'", display_name(),
                                    local_name));
  for (const auto& [local, existing] : children_)
    if (local == local_name)
      throw ArgumentError(fmt::format("{}: child '{}' registered twice", display_name(), local_name));
  child->rename(name_.empty() ? local_name : name_ + "." + local_name);
  child->train(training_);
  children_.emplace_back(std::move(local_name), std::move(child));
}

void Module::rename(const std::string& name) {
  name_ = name;
  for (auto& [local, child] : children_) child->rename(name_ + "." + local);
}

// ---------------------------------------------------------------------------------------------
const Tensor& Sequential::forward(const Tensor& input) {
  const Tensor* x = &input;
  for (const auto& [local, child] : children()) x = &child->forward(*x);
  return *x;
}

const Tensor& Sequential::backward(const Tensor& grad_output) {
  const Tensor* g = &grad_output;
  const auto& kids = children();
  for (std::size_t i = kids.size(); i-- > 0;) g = &kids[i].second->backward(*g);
  return *g;
}

Shape Sequential::output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers) const {
  Shape shape = input_shape;
  for (const auto& [local, child] : children()) shape = child->output_shape(shape, layers);
  return shape;
}

void Sequential::set_input_grad_needed(bool needed) {
  Module::set_input_grad_needed(needed);
  if (!children().empty()) children().front().second->set_input_grad_needed(needed);
}

}  // namespace bitmix::nn
