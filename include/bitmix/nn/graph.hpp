#pragma once
// A graph model: a DAG of the nn layers over named tensors, for networks that are not the zoo's
// (an imported ONNX model, a hand-written architecture). Residual additions, channel
// concatenations and branches of any shape are nodes like the layers, so every topology trains
// through the same explicit forward/backward passes as the zoo.
//
// The structure is plain data (GraphSpec), stored in the model spec of the run metadata
// (ModelSpec::graph, arch "graph"), so a checkpoint rebuilds its graph model exactly as it
// rebuilds a ResNet: nn::make_model(spec), then load the tensors.
//
// Naming: each layer node becomes a child module with the node's name ("layer1_0_conv1"), so
// parameters are "<node>.weight" and BitConfig entries name the node. Node names contain no '.'.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/core/rng.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/module.hpp"

namespace bitmix::nn {

enum class GraphOp {
  conv,             // Conv2d (conv options)
  batch_norm,       // BatchNorm2d (channels, eps, momentum, relu = fused ReLU)
  relu,             // ReLU
  relu6,            // min(max(x, 0), 6)
  max_pool,         // MaxPool2d (pool options)
  avg_pool,         // AvgPool2d (pool options; padding counts in the divisor)
  global_avg_pool,  // [N, C, H, W] -> [N, C]
  flatten,          // [N, ...] -> [N, rest]
  linear,           // Linear (in_features, out_features, bias)
  add,              // two inputs of one shape
  concat,           // two or more inputs joined along channels (axis 1)
};
std::string_view graph_op_name(GraphOp op);

struct GraphNode {
  std::string name;                 // the child module's name (no '.'), unique in the graph
  GraphOp op = GraphOp::relu;
  std::vector<std::string> inputs;  // tensor names, each the graph input or an earlier node's output
  std::string output;               // tensor name written once

  Conv2dOptions conv;               // conv
  Pool2dOptions pool;               // max_pool, avg_pool
  int64_t channels = 0;             // batch_norm
  float eps = 1e-5f, momentum = 0.1f;
  bool relu = false;                // batch_norm: ReLU fused into the module
  int64_t in_features = 0, out_features = 0;  // linear
  bool bias = true;                 // linear
};

struct GraphSpec {
  std::string input = "input";  // the image tensor's name
  std::string output;           // the logits' tensor name
  std::vector<GraphNode> nodes;  // in a topological order (every input defined before its use)

  // Throws ArgumentError naming the node and what is wrong: empty or duplicate names, a '.' in
  // a name, a tensor written twice, an input not yet defined (a dangling input or a cycle), the
  // wrong number of inputs, invalid layer options, an output that no node writes.
  void validate() const;
};

// The spec as a JSON object text (the "graph" field of a model spec), and back; reading checks
// every field's type and range and the graph (validate), a FormatError naming the node and field.
std::string graph_spec_to_json(const GraphSpec& spec);
GraphSpec graph_spec_from_json(std::string_view json);

// min(max(x, 0), 6), as MobileNets use it.
class ReLU6 : public Module {
 public:
  ReLU6() : Module("ReLU6") {}
  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;

 private:
  Tensor output_, grad_input_;
};

// Runs a GraphSpec. Layer nodes are child modules (registered in node order, which is forward
// order); add and concat nodes are computed by the graph itself. Backward visits the nodes in
// reverse and sums the gradients of tensors read by several nodes.
class GraphModel : public Module {
 public:
  // image_shape: [C, H, W] of one input image; the graph is validated for it.
  GraphModel(GraphSpec spec, const Shape& image_shape, Rng& rng);

  const GraphSpec& spec() const { return spec_; }
  // The module of node i (nullptr for add and concat nodes).
  Module* node_module(std::size_t i) const { return steps_.at(i).module; }
  // Index of the node writing `tensor`, -1 for the graph input; throws ArgumentError if unknown.
  int producer_of(const std::string& tensor) const;
  // How many node inputs read `tensor` (the graph output counts as one reader).
  int readers_of(const std::string& tensor) const;

  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;
  void set_input_grad_needed(bool needed) override;

 private:
  struct Step {
    Module* module = nullptr;
    std::vector<int> inputs;  // tensor ids; 0 = the graph input
    int output = 0;
    Tensor out;                // add / concat output
    std::vector<Tensor> grads;  // concat input gradients
  };
  void contribute(int tensor, const Tensor& grad);

  GraphSpec spec_;
  std::vector<std::string> tensor_names_;  // id -> name
  std::vector<Step> steps_;
  int output_id_ = 0;
  std::vector<int> readers_;
  std::vector<const Tensor*> values_;
  std::vector<const Tensor*> grad_ref_;
  std::vector<Tensor> grad_buf_;
  std::vector<char> grad_owned_;
  bool ran_forward_ = false;
};

}  // namespace bitmix::nn
