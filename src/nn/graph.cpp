// GraphModel: the DAG of layers over named tensors (see graph.hpp); its spec's validation
// lives here, its JSON in graph_json.cpp.
#include "bitmix/nn/graph.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/layers.hpp"

namespace bitmix::nn {

std::string_view graph_op_name(GraphOp op) {
  switch (op) {
    case GraphOp::conv: return "conv";
    case GraphOp::batch_norm: return "batch_norm";
    case GraphOp::relu: return "relu";
    case GraphOp::relu6: return "relu6";
    case GraphOp::max_pool: return "max_pool";
    case GraphOp::avg_pool: return "avg_pool";
    case GraphOp::global_avg_pool: return "global_avg_pool";
    case GraphOp::flatten: return "flatten";
    case GraphOp::linear: return "linear";
    case GraphOp::add: return "add";
    case GraphOp::concat: return "concat";
  }
  return "?";
}

void GraphSpec::validate() const {
  if (input.empty()) throw ArgumentError("graph: the input tensor has no name");
  if (nodes.empty()) throw ArgumentError("graph: no nodes");
  std::map<std::string, std::string> written;  // tensor -> writer ("" = graph input)
  written[input] = "";
  std::map<std::string, int> names;
  for (const GraphNode& n : nodes) {
    const std::string what = fmt::format("graph node '{}' ({})", n.name, graph_op_name(n.op));
    if (n.name.empty() || n.name.find('.') != std::string::npos)
      throw ArgumentError(fmt::format("{}: a node name must be non-empty and contain no '.'", what));
    if (names[n.name]++ > 0) throw ArgumentError(fmt::format("{}: the name is used by two nodes", what));
    const std::size_t want = n.op == GraphOp::add ? 2 : 1;
    if (n.op == GraphOp::concat ? n.inputs.size() < 2 : n.inputs.size() != want)
      throw ArgumentError(fmt::format("{}: {} inputs, expected {}", what, n.inputs.size(),
                                      n.op == GraphOp::concat ? std::string("at least 2") : std::to_string(want)));
    for (const std::string& in : n.inputs)
      if (!written.contains(in))
        throw ArgumentError(fmt::format("{}: input tensor '{}' is not the graph input or the output of an earlier node "
                                        "(a dangling input, or a cycle)",
                                        what, in));
    if (n.output.empty()) throw ArgumentError(fmt::format("{}: the output tensor has no name", what));
    if (auto it = written.find(n.output); it != written.end())
      throw ArgumentError(fmt::format("{}: tensor '{}' is already written by {}", what, n.output,
                                      it->second.empty() ? std::string("the graph input") : "node '" + it->second + "'"));
    written[n.output] = n.name;
    switch (n.op) {
      case GraphOp::conv:
        n.conv.validate(what);
        break;
      case GraphOp::batch_norm:
        if (n.channels < 1 || !(n.eps > 0.0f) || !(n.momentum >= 0.0f && n.momentum <= 1.0f))
          throw ArgumentError(fmt::format("{}: channels {}, eps {}, momentum {}: expected channels >= 1, eps > 0 and "
                                          "momentum in [0, 1]",
                                          what, n.channels, n.eps, n.momentum));
        break;
      case GraphOp::max_pool:
      case GraphOp::avg_pool: {
        const Pool2dOptions& p = n.pool;
        if (p.kernel_h < 1 || p.kernel_w < 1 || p.stride_h < 1 || p.stride_w < 1 || p.pad_h < 0 || p.pad_w < 0 ||
            p.pad_h >= p.kernel_h || p.pad_w >= p.kernel_w)
          throw ArgumentError(fmt::format("{}: kernel {}x{}, stride {}x{}, padding {}x{}: expected positive kernel and "
                                          "stride and padding smaller than the kernel",
                                          what, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w));
        break;
      }
      case GraphOp::linear:
        if (n.in_features < 1 || n.out_features < 1)
          throw ArgumentError(fmt::format("{}: {} -> {} features: expected positive sizes", what, n.in_features,
                                          n.out_features));
        break;
      default:
        break;
    }
  }
  if (!written.contains(output) || output == input)
    throw ArgumentError(fmt::format("graph: output tensor '{}' is not written by any node", output));
}

// ---------------------------------------------------------------------------------------------
const Tensor& ReLU6::forward(const Tensor& input) {
  ensure_shape(output_, input.shape());
  const float* x = input.data();
  float* y = output_.data();
  parallel_for(input.numel(), 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = std::min(std::max(x[i], 0.0f), 6.0f);
  });
  return output_;
}

const Tensor& ReLU6::backward(const Tensor& grad_output) {
  grad_output.expect_shape(output_.shape(), display_name() + ": gradient");
  ensure_shape(grad_input_, output_.shape());
  const float* y = output_.data();
  const float* g = grad_output.data();
  float* dx = grad_input_.data();
  // The output is strictly inside (0, 6) exactly where the input was, so it gives the mask.
  parallel_for(output_.numel(), 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) dx[i] = (y[i] > 0.0f && y[i] < 6.0f) ? g[i] : 0.0f;
  });
  return grad_input_;
}

Shape ReLU6::output_shape(const Shape& input_shape, std::vector<LayerInfo>*) const { return input_shape; }

// ---------------------------------------------------------------------------------------------
namespace {

std::unique_ptr<Module> make_layer(const GraphNode& n, Rng& rng) {
  switch (n.op) {
    case GraphOp::conv: return std::make_unique<Conv2d>(n.conv, rng);
    case GraphOp::batch_norm: return std::make_unique<BatchNorm2d>(n.channels, n.relu, BatchNormOptions{n.eps, n.momentum});
    case GraphOp::relu: return std::make_unique<ReLU>();
    case GraphOp::relu6: return std::make_unique<ReLU6>();
    case GraphOp::max_pool: return std::make_unique<MaxPool2d>(n.pool);
    case GraphOp::avg_pool: return std::make_unique<AvgPool2d>(n.pool);
    case GraphOp::global_avg_pool: return std::make_unique<GlobalAvgPool2d>();
    case GraphOp::flatten: return std::make_unique<Flatten>();
    case GraphOp::linear: return std::make_unique<Linear>(n.in_features, n.out_features, n.bias, rng);
    case GraphOp::add:
    case GraphOp::concat: return nullptr;
  }
  return nullptr;
}

}  // namespace

GraphModel::GraphModel(GraphSpec spec, const Shape& image_shape, Rng& rng) : Module("Graph"), spec_(std::move(spec)) {
  spec_.validate();
  std::map<std::string, int> ids;
  ids[spec_.input] = 0;
  tensor_names_.push_back(spec_.input);
  for (const GraphNode& n : spec_.nodes) {
    Step step;
    for (const std::string& in : n.inputs) step.inputs.push_back(ids.at(in));
    step.output = static_cast<int>(tensor_names_.size());
    ids[n.output] = step.output;
    tensor_names_.push_back(n.output);
    if (std::unique_ptr<Module> layer = make_layer(n, rng)) step.module = &add_module(n.name, std::move(layer));
    steps_.push_back(std::move(step));
  }
  output_id_ = ids.at(spec_.output);
  readers_.assign(tensor_names_.size(), 0);
  for (const Step& s : steps_)
    for (int in : s.inputs) ++readers_[static_cast<std::size_t>(in)];
  ++readers_[static_cast<std::size_t>(output_id_)];
  values_.assign(tensor_names_.size(), nullptr);
  grad_ref_.assign(tensor_names_.size(), nullptr);
  grad_buf_.resize(tensor_names_.size());
  grad_owned_.assign(tensor_names_.size(), 0);
  if (image_shape.size() != 3)
    throw ShapeError(fmt::format("graph: image shape {} must be [C, H, W]", shape_to_string(image_shape)));
  output_shape({1, image_shape[0], image_shape[1], image_shape[2]});
}

int GraphModel::producer_of(const std::string& tensor) const {
  for (std::size_t i = 0; i < spec_.nodes.size(); ++i)
    if (spec_.nodes[i].output == tensor) return static_cast<int>(i);
  if (tensor == spec_.input) return -1;
  throw ArgumentError(fmt::format("graph: no tensor '{}'", tensor));
}

int GraphModel::readers_of(const std::string& tensor) const {
  for (std::size_t id = 0; id < tensor_names_.size(); ++id)
    if (tensor_names_[id] == tensor) return readers_[id];
  throw ArgumentError(fmt::format("graph: no tensor '{}'", tensor));
}

const Tensor& GraphModel::forward(const Tensor& input) {
  values_[0] = &input;
  for (std::size_t i = 0; i < steps_.size(); ++i) {
    Step& s = steps_[i];
    const GraphNode& n = spec_.nodes[i];
    const std::string layer = name().empty() ? n.name : name() + "." + n.name;
    if (s.module != nullptr) {
      values_[static_cast<std::size_t>(s.output)] = &s.module->forward(*values_[static_cast<std::size_t>(s.inputs[0])]);
      continue;
    }
    if (n.op == GraphOp::add) {
      add_forward(*values_[static_cast<std::size_t>(s.inputs[0])], *values_[static_cast<std::size_t>(s.inputs[1])],
                  s.out, layer);
    } else {  // concat along channels
      const Tensor& first = *values_[static_cast<std::size_t>(s.inputs[0])];
      if (first.rank() < 2) throw ShapeError(fmt::format("{}: concat of rank-{} tensors", layer, first.rank()));
      Shape shape = first.shape();
      shape[1] = 0;
      for (int in : s.inputs) {
        const Tensor& t = *values_[static_cast<std::size_t>(in)];
        Shape rest = t.shape();
        if (rest.size() != shape.size()) throw ShapeError(fmt::format("{}: inputs of different ranks", layer));
        shape[1] += rest[1];
        rest[1] = 0;
        Shape expect = shape;
        expect[1] = 0;
        if (rest != expect)
          throw ShapeError(fmt::format("{}: input {} does not match {} outside the channel axis", layer,
                                       shape_to_string(t.shape()), shape_to_string(first.shape())));
      }
      ensure_shape(s.out, shape);
      const int64_t batch = shape[0], inner = s.out.numel() / (batch * shape[1]);
      int64_t offset = 0;
      for (int in : s.inputs) {
        const Tensor& t = *values_[static_cast<std::size_t>(in)];
        const int64_t block = t.dim(1) * inner;
        for (int64_t b = 0; b < batch; ++b)
          std::copy(t.data() + b * block, t.data() + (b + 1) * block, s.out.data() + b * shape[1] * inner + offset);
        offset += block;
      }
    }
    values_[static_cast<std::size_t>(s.output)] = &s.out;
  }
  ran_forward_ = true;
  return *values_[static_cast<std::size_t>(output_id_)];
}

void GraphModel::contribute(int tensor, const Tensor& grad) {
  const auto t = static_cast<std::size_t>(tensor);
  if (grad_ref_[t] == nullptr) {
    grad_ref_[t] = &grad;
    return;
  }
  if (!grad_owned_[t]) {
    ensure_shape(grad_buf_[t], grad_ref_[t]->shape());
    std::copy(grad_ref_[t]->data(), grad_ref_[t]->data() + grad_ref_[t]->numel(), grad_buf_[t].data());
    grad_ref_[t] = &grad_buf_[t];
    grad_owned_[t] = 1;
  }
  grad.expect_shape(grad_buf_[t].shape(), fmt::format("graph: gradient of tensor '{}'", tensor_names_[t]));
  float* dst = grad_buf_[t].data();
  const float* src = grad.data();
  parallel_for(grad.numel(), 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) dst[i] += src[i];
  });
}

const Tensor& GraphModel::backward(const Tensor& grad_output) {
  if (!ran_forward_) throw Error(fmt::format("{}: backward called before forward", display_name()));
  std::fill(grad_ref_.begin(), grad_ref_.end(), nullptr);
  std::fill(grad_owned_.begin(), grad_owned_.end(), 0);
  contribute(output_id_, grad_output);
  for (std::size_t i = steps_.size(); i-- > 0;) {
    Step& s = steps_[i];
    const Tensor* g = grad_ref_[static_cast<std::size_t>(s.output)];
    if (g == nullptr) continue;  // the node's output is not used by the loss
    const bool to_input = std::find(s.inputs.begin(), s.inputs.end(), 0) != s.inputs.end();
    const bool wanted = !to_input || input_grad_needed();
    if (s.module != nullptr) {
      const Tensor& gx = s.module->backward(*g);
      if (wanted) contribute(s.inputs[0], gx);
    } else if (spec_.nodes[i].op == GraphOp::add) {
      if (wanted)
        for (int in : s.inputs) contribute(in, *g);
    } else if (wanted) {  // concat: split the gradient along channels
      const int64_t batch = g->dim(0), channels = g->dim(1), inner = g->numel() / (batch * channels);
      s.grads.resize(s.inputs.size());
      int64_t offset = 0;
      for (std::size_t k = 0; k < s.inputs.size(); ++k) {
        const Tensor& x = *values_[static_cast<std::size_t>(s.inputs[k])];
        ensure_shape(s.grads[k], x.shape());
        const int64_t block = x.dim(1) * inner;
        for (int64_t b = 0; b < batch; ++b)
          std::copy(g->data() + b * channels * inner + offset, g->data() + b * channels * inner + offset + block,
                    s.grads[k].data() + b * block);
        offset += block;
      }
      for (std::size_t k = 0; k < s.inputs.size(); ++k) contribute(s.inputs[k], s.grads[k]);
    }
  }
  if (grad_ref_[0] == nullptr) {
    ensure_shape(grad_buf_[0], values_[0]->shape());
    grad_buf_[0].zero();
    return grad_buf_[0];
  }
  return *grad_ref_[0];
}

Shape GraphModel::output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers) const {
  std::vector<Shape> shapes = {input_shape};
  shapes.resize(tensor_names_.size());
  for (std::size_t i = 0; i < steps_.size(); ++i) {
    const Step& s = steps_[i];
    const GraphNode& n = spec_.nodes[i];
    const std::string layer = name().empty() ? n.name : name() + "." + n.name;
    Shape out;
    if (s.module != nullptr) {
      out = s.module->output_shape(shapes[static_cast<std::size_t>(s.inputs[0])], layers);
    } else if (n.op == GraphOp::add) {
      const Shape& a = shapes[static_cast<std::size_t>(s.inputs[0])];
      const Shape& b = shapes[static_cast<std::size_t>(s.inputs[1])];
      if (a != b)
        throw ShapeError(fmt::format("{}: adds '{}' {} and '{}' {}: expected one shape", layer, n.inputs[0],
                                     shape_to_string(a), n.inputs[1], shape_to_string(b)));
      out = a;
    } else {
      out = shapes[static_cast<std::size_t>(s.inputs[0])];
      if (out.size() < 2) throw ShapeError(fmt::format("{}: concat of a rank-{} tensor", layer, out.size()));
      out[1] = 0;
      for (std::size_t k = 0; k < s.inputs.size(); ++k) {
        Shape x = shapes[static_cast<std::size_t>(s.inputs[k])];
        if (x.size() != out.size())
          throw ShapeError(fmt::format("{}: input '{}' {} has another rank", layer, n.inputs[k], shape_to_string(x)));
        out[1] += x[1];
        x[1] = out[1];
        Shape expect = out;
        if (x != expect)
          throw ShapeError(fmt::format("{}: input '{}' {} does not match '{}' {} outside the channel axis", layer,
                                       n.inputs[k], shape_to_string(shapes[static_cast<std::size_t>(s.inputs[k])]),
                                       n.inputs[0], shape_to_string(shapes[static_cast<std::size_t>(s.inputs[0])])));
      }
    }
    shapes[static_cast<std::size_t>(s.output)] = out;
  }
  return shapes[static_cast<std::size_t>(output_id_)];
}

void GraphModel::set_input_grad_needed(bool needed) {
  Module::set_input_grad_needed(needed);
  for (const Step& s : steps_)
    if (s.module != nullptr && s.inputs[0] == 0) s.module->set_input_grad_needed(needed);
}

}  // namespace bitmix::nn
