#pragma once
// The ONNX importer's converter, shared by onnx_import.cpp (the walk over the nodes, tensors,
// fusion, building the model) and onnx_operators.cpp (one method per supported operator).
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/nn/graph.hpp"
#include "onnx_import.hpp"
#include "onnx_internal.hpp"

namespace bitmix::deploy::onnx_detail {

inline constexpr int64_t kMinOpset = 11, kMaxOpset = 17;

// "layer1.0.conv1" / "/layer1/layer1.0/conv1/Conv" -> "layer1_0_conv1": node names become
// module names, which may not contain '.'.
std::string sanitize(std::string_view text);

class Importer {
 public:
  Importer(const onnx::ModelProto& model, std::string_view source) : model_(model), source_(source) {}

  OnnxImport run();

 private:
  // ---- Header, input.
  void check_header();
  void read_input(const onnx::GraphProto& g);

  // ---- Tensors.
  std::string resolve(const std::string& name) const;
  bool is_constant(const std::string& name) const { return constants_.contains(name); }
  const Constant& constant(const onnx::NodeProto& node, int i, const std::string& label, const char* role) const;
  // A computed (non-constant) input: its graph tensor name.
  std::string activation(const onnx::NodeProto& node, int i, const std::string& label) const;
  void define(const onnx::NodeProto& node, const std::string& label, const Shape& shape);
  void alias(const onnx::NodeProto& node, const std::string& label, const std::string& target);
  std::string module_name(const onnx::NodeProto& node, int index, const std::string& weight_name);
  nn::GraphNode& add_node(nn::GraphOp op, std::string name, std::vector<std::string> inputs, const onnx::NodeProto& node);
  void set_weights(const std::string& node, std::vector<std::pair<std::string, Tensor>> tensors);
  static Tensor to_tensor(const Constant& c, const Shape& shape);

  // ---- Spatial attributes shared by Conv and the poolings.
  struct Window {
    int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  };
  Window window(const Attributes& a, const std::vector<int64_t>& kernel) const;

  // ---- Operators.
  void convert(const onnx::NodeProto& node, int index);
  void define_constant(const onnx::NodeProto& node, const std::string& label, Constant c);
  void unary(const onnx::NodeProto& node, int index, const std::string& label, nn::GraphOp op,
             std::initializer_list<std::string_view> attrs) {
    const Attributes a(node, label, source_, attrs);
    const std::string x = activation(node, 0, label);
    Shape s = shapes_.at(x);
    if (op == nn::GraphOp::global_avg_pool) {
      if (s.size() != 4) throw FormatError(fmt::format("{}: {}: input {} is not [N, C, H, W]", source_, label, shape_to_string(s)));
      s = {s[0], s[1]};  // nn's global pooling gives [N, C]; ONNX's [N, C, 1, 1] is flattened by the next node
    }
    add_node(op, module_name(node, index, ""), {x}, node);
    define(node, label, s);
  }

  void conv(const onnx::NodeProto& node, int index, const std::string& label);
  void batch_norm(const onnx::NodeProto& node, int index, const std::string& label);
  void clip(const onnx::NodeProto& node, int index, const std::string& label);
  bool only_reader_is(const std::string& tensor, const std::string& op) const;

  // QuantizeLinear of a computed tensor: remembered until its DequantizeLinear, which makes the
  // pair one fake_quant node. Per-tensor scales and zero points only.
  void quantize_linear(const onnx::NodeProto& node, const std::string& label);
  void dequantize_linear(const onnx::NodeProto& node, int index, const std::string& label);
  void add(const onnx::NodeProto& node, int index, const std::string& label);
  void concat(const onnx::NodeProto& node, int index, const std::string& label);
  void pool(const onnx::NodeProto& node, int index, const std::string& label);

  // Flatten(axis 1), Reshape to [N, rest] and Squeeze of the trailing 1x1 of a global pooling.
  void flatten(const onnx::NodeProto& node, int index, const std::string& label);
  void matmul(const onnx::NodeProto& node, int index, const std::string& label);

  // ---- After the walk.
  void fuse_and_prune();
  OnnxImport finish(int64_t classes);
  void read_properties(OnnxImport& out) const;
  const onnx::ModelProto& model_;
  std::string_view source_;
  int64_t opset_ = 0, batch_ = 1;
  Shape image_;
  std::map<std::string, Constant> constants_;
  std::set<std::string> initializer_names_;
  std::map<std::string, Shape> shapes_;  // computed tensors (by their canonical name), batch 1
  std::map<std::string, std::string> aliases_;
  struct Clipped {
    std::string input;
    double lo = 0, hi = 0;
  };
  std::map<std::string, Clipped> clips_;  // Clip outputs read only by a QuantizeLinear
  struct Quantized {
    std::string input;
    float scale = 1.0f;
    int32_t zero_point = 0, min_code = 0, max_code = 255;
  };
  std::map<std::string, Quantized> quantized_;  // QuantizeLinear outputs of computed tensors
  std::set<std::string> used_names_;
  std::map<std::string, std::vector<std::pair<std::string, Tensor>>> weights_;
  nn::GraphSpec spec_;
  std::vector<std::string> notes_;
  int folded_ = 0, dropped_ = 0;
};

}  // namespace bitmix::deploy::onnx_detail
