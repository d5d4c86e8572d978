// ONNX import: walks the graph's nodes in file order, folds constant subgraphs, maps each
// remaining node to an nn graph node (or an alias for Identity / Dropout / no-op reshapes),
// fuses what bitmix's layers compute in one module (MatMul + Add, BatchNorm + Relu), then builds
// the GraphModel and loads the file's weights into it.
#include "onnx_import.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/nn/graph.hpp"
#include "bitmix/nn/layers.hpp"
#include "onnx_internal.hpp"

namespace bitmix::deploy {
namespace {

using namespace onnx_detail;

constexpr int64_t kMinOpset = 11, kMaxOpset = 17;

// "layer1.0.conv1" / "/layer1/layer1.0/conv1/Conv" -> "layer1_0_conv1": node names become
// module names, which may not contain '.'.
std::string sanitize(std::string_view text) {
  std::string out;
  for (char ch : text) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
    if (ok) out += ch;
    else if (!out.empty() && out.back() != '_') out += '_';
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out;
}

class Importer {
 public:
  Importer(const onnx::ModelProto& model, std::string_view source) : model_(model), source_(source) {}

  OnnxImport run() {
    check_header();
    const onnx::GraphProto& g = model_.graph();
    for (const onnx::TensorProto& t : g.initializer()) {
      if (t.name().empty()) throw FormatError(fmt::format("{}: an initializer has no name", source_));
      constants_[t.name()] = decode_tensor(t, source_, fmt::format("initializer '{}'", t.name()));
      initializer_names_.insert(t.name());
    }
    if (g.sparse_initializer_size() > 0) throw FormatError(fmt::format("{}: sparse initializers are not supported", source_));
    read_input(g);
    for (int i = 0; i < g.node_size(); ++i) convert(g.node(i), i);
    if (g.output_size() != 1)
      throw FormatError(fmt::format("{}: the graph has {} outputs; bitmix imports classifiers with one output (the "
                                    "logits)",
                                    source_, g.output_size()));
    const std::string out = resolve(g.output(0).name());
    if (!shapes_.contains(out))
      throw FormatError(fmt::format("{}: graph output '{}' is not computed from the input by any node", source_,
                                    g.output(0).name()));
    const Shape& s = shapes_.at(out);
    if (s.size() != 2)
      throw FormatError(fmt::format("{}: graph output '{}' has shape {}; expected [N, classes] logits", source_,
                                    g.output(0).name(), shape_to_string(s)));
    spec_.output = out;
    fuse_and_prune();
    return finish(s[1]);
  }

 private:
  // ---- Header, input.
  void check_header() {
    opset_ = 0;
    for (const onnx::OperatorSetIdProto& o : model_.opset_import())
      if (o.domain().empty() || o.domain() == "ai.onnx") opset_ = o.version();
    if (opset_ == 0) throw FormatError(fmt::format("{}: no opset of the default ONNX domain is imported", source_));
    if (opset_ < kMinOpset || opset_ > kMaxOpset)
      throw FormatError(fmt::format("{}: opset {}: bitmix imports opsets {} to {} (re-export with "
                                    "torch.onnx.export(..., opset_version=13))",
                                    source_, opset_, kMinOpset, kMaxOpset));
    if (!model_.has_graph()) throw FormatError(fmt::format("{}: no graph", source_));
    if (model_.functions_size() > 0) throw FormatError(fmt::format("{}: model-local functions are not supported", source_));
  }

  void read_input(const onnx::GraphProto& g) {
    std::vector<const onnx::ValueInfoProto*> inputs;
    for (const onnx::ValueInfoProto& v : g.input())
      if (!initializer_names_.contains(v.name())) inputs.push_back(&v);
    if (inputs.size() != 1)
      throw FormatError(fmt::format("{}: the graph has {} inputs besides its initializers; bitmix imports models with "
                                    "one image input",
                                    source_, inputs.size()));
    const onnx::ValueInfoProto& in = *inputs[0];
    const std::string what = fmt::format("graph input '{}'", in.name());
    if (!in.type().has_tensor_type()) throw FormatError(fmt::format("{}: {} is not a tensor", source_, what));
    const onnx::TypeProto_Tensor& t = in.type().tensor_type();
    if (t.elem_type() != onnx::TensorProto_DataType_FLOAT)
      throw FormatError(fmt::format("{}: {} has data type {}; bitmix imports float32 models", source_, what,
                                    onnx::TensorProto_DataType_IsValid(t.elem_type())
                                        ? onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(t.elem_type()))
                                        : std::to_string(t.elem_type())));
    if (!t.has_shape() || t.shape().dim_size() != 4)
      throw FormatError(fmt::format("{}: {} must have a static shape [N, C, H, W]", source_, what));
    Shape shape;
    for (int d = 0; d < 4; ++d) {
      const auto& dim = t.shape().dim(d);
      if (d == 0) {
        batch_ = dim.has_dim_value() ? dim.dim_value() : 1;  // the batch may be symbolic
        shape.push_back(1);
        continue;
      }
      if (!dim.has_dim_value() || dim.dim_value() < 1 || dim.dim_value() > (int64_t{1} << 16))
        throw FormatError(fmt::format("{}: {} dimension {} is {}: a dynamic shape; bitmix needs static C, H, W "
                                      "(export without dynamic_axes on them)",
                                      source_, what, d, dim.has_dim_param() ? "'" + dim.dim_param() + "'" : std::string("unset")));
      shape.push_back(dim.dim_value());
    }
    spec_.input = "input";
    aliases_[in.name()] = "input";
    shapes_["input"] = shape;
    image_ = {shape[1], shape[2], shape[3]};
  }

  // ---- Tensors.
  std::string resolve(const std::string& name) const {
    auto it = aliases_.find(name);
    return it != aliases_.end() ? it->second : name;
  }
  bool is_constant(const std::string& name) const { return constants_.contains(name); }
  const Constant& constant(const onnx::NodeProto& node, int i, const std::string& label, const char* role) const {
    if (i >= node.input_size() || node.input(i).empty())
      throw FormatError(fmt::format("{}: {}: missing input {} ({})", source_, label, i, role));
    auto it = constants_.find(node.input(i));
    if (it == constants_.end())
      throw FormatError(fmt::format("{}: {}: input {} ('{}', {}) must be a constant (an initializer); computed weights "
                                    "are not supported",
                                    source_, label, i, node.input(i), role));
    return it->second;
  }
  // A computed (non-constant) input: its graph tensor name.
  std::string activation(const onnx::NodeProto& node, int i, const std::string& label) const {
    if (i >= node.input_size() || node.input(i).empty())
      throw FormatError(fmt::format("{}: {}: missing input {}", source_, label, i));
    const std::string name = resolve(node.input(i));
    if (!shapes_.contains(name)) {
      if (is_constant(node.input(i)))
        throw FormatError(fmt::format("{}: {}: input {} ('{}') is a constant where a computed tensor is expected",
                                      source_, label, i, node.input(i)));
      throw FormatError(fmt::format("{}: {}: input '{}' is not produced by an earlier node, an initializer or the graph "
                                    "input (a dangling input, or nodes out of order: a cycle)",
                                    source_, label, node.input(i)));
    }
    return name;
  }
  void define(const onnx::NodeProto& node, const std::string& label, const Shape& shape) {
    const std::string& out = node.output(0);
    if (out.empty()) throw FormatError(fmt::format("{}: {}: the output has no name", source_, label));
    if (shapes_.contains(out) || constants_.contains(out) || aliases_.contains(out))
      throw FormatError(fmt::format("{}: {}: output '{}' is written twice", source_, label, out));
    shapes_[out] = shape;
  }
  void alias(const onnx::NodeProto& node, const std::string& label, const std::string& target) {
    const std::string& out = node.output(0);
    if (shapes_.contains(out) || constants_.contains(out) || aliases_.contains(out))
      throw FormatError(fmt::format("{}: {}: output '{}' is written twice", source_, label, out));
    aliases_[out] = target;
  }
  std::string module_name(const onnx::NodeProto& node, int index, const std::string& weight_name) {
    std::string base;
    if (!weight_name.empty() && weight_name.rfind("onnx::", 0) != 0) {
      std::string w = weight_name;
      for (const char* suffix : {".weight", ".bias"})
        if (w.size() > std::strlen(suffix) && w.compare(w.size() - std::strlen(suffix), std::strlen(suffix), suffix) == 0)
          w.resize(w.size() - std::strlen(suffix));
      base = sanitize(w);
    }
    if (base.empty()) base = sanitize(node.name());
    if (base.empty()) base = fmt::format("{}_{}", sanitize(node.op_type()), index);
    std::string name = base;
    for (int k = 2; used_names_.contains(name); ++k) name = fmt::format("{}_{}", base, k);
    used_names_.insert(name);
    return name;
  }
  nn::GraphNode& add_node(nn::GraphOp op, std::string name, std::vector<std::string> inputs, const onnx::NodeProto& node) {
    nn::GraphNode n;
    n.op = op;
    n.name = std::move(name);
    n.inputs = std::move(inputs);
    n.output = node.output(0);
    spec_.nodes.push_back(std::move(n));
    return spec_.nodes.back();
  }
  void set_weights(const std::string& node, std::vector<std::pair<std::string, Tensor>> tensors) {
    weights_[node] = std::move(tensors);
  }
  static Tensor to_tensor(const Constant& c, const Shape& shape) {
    Tensor t(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(c.values[static_cast<std::size_t>(i)]);
    return t;
  }

  // ---- Spatial attributes shared by Conv and the poolings.
  struct Window {
    int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  };
  Window window(const Attributes& a, const std::vector<int64_t>& kernel) const {
    if (a.has("auto_pad") && a.text("auto_pad", "NOTSET") != "NOTSET" && a.text("auto_pad", "") != "VALID")
      a.fail("auto_pad", a.text("auto_pad", ""), "NOTSET or VALID (explicit pads); SAME_UPPER/SAME_LOWER are not supported");
    if (kernel.size() != 2) a.fail("kernel_shape", dims_text(kernel), "two spatial sizes (2-D)");
    Window w;
    w.kh = kernel[0];
    w.kw = kernel[1];
    const std::vector<int64_t> strides = a.integers("strides", {1, 1});
    if (strides.size() != 2 || strides[0] < 1 || strides[1] < 1) a.fail("strides", dims_text(strides), "two positive strides");
    w.sh = strides[0];
    w.sw = strides[1];
    const std::vector<int64_t> pads = a.integers("pads", {0, 0, 0, 0});
    if (pads.size() != 4 || pads[0] < 0 || pads[1] < 0) a.fail("pads", dims_text(pads), "[top, left, bottom, right] >= 0");
    if (pads[0] != pads[2] || pads[1] != pads[3])
      a.fail("pads", dims_text(pads), "symmetric padding (top == bottom, left == right)");
    w.ph = pads[0];
    w.pw = pads[1];
    const std::vector<int64_t> dil = a.integers("dilations", {1, 1});
    if (dil != std::vector<int64_t>{1, 1}) a.fail("dilations", dims_text(dil), "[1, 1] (dilated convolutions are not supported)");
    return w;
  }

  // ---- Operators.
  void convert(const onnx::NodeProto& node, int index) {
    const std::string label = node_label(node, index);
    if (!node.domain().empty() && node.domain() != "ai.onnx")
      throw FormatError(fmt::format("{}: {}: operator domain '{}' is not supported", source_, label, node.domain()));
    if (node.output_size() < 1) throw FormatError(fmt::format("{}: {}: no outputs", source_, label));
    const std::string& op = node.op_type();
    if (op == "Constant") {
      const Attributes a(node, label, source_, {"value"});
      define_constant(node, label, decode_tensor(a.tensor("value"), source_, label + " value"));
      return;
    }
    const bool all_constant = node.input_size() > 0 &&
                              std::all_of(node.input().begin(), node.input().end(),
                                          [&](const std::string& in) { return in.empty() || is_constant(in); });
    if (all_constant && can_fold(op)) {
      std::vector<Constant> out = fold(node, label, source_, constants_);
      define_constant(node, label, std::move(out[0]));
      ++folded_;
      return;
    }
    if (op == "Shape" && node.input_size() == 1 && shapes_.contains(resolve(node.input(0)))) {
      // The shape of a computed tensor is static here (C, H, W are; N is the exported batch).
      Constant c;
      c.integer = true;
      Shape s = shapes_.at(resolve(node.input(0)));
      s[0] = batch_;
      (void)Attributes(node, label, source_, {});
      for (int64_t d : s) c.values.push_back(static_cast<double>(d));
      c.dims = {static_cast<int64_t>(s.size())};
      define_constant(node, label, std::move(c));
      ++folded_;
      return;
    }
    for (int i = 1; i < node.output_size(); ++i)
      if (!node.output(i).empty() && !(op == "Dropout" || op == "BatchNormalization"))
        throw FormatError(fmt::format("{}: {}: output {} ('{}') is not supported (bitmix uses the first output only)",
                                      source_, label, i, node.output(i)));
    if (op == "Conv") return conv(node, index, label);
    if (op == "BatchNormalization") return batch_norm(node, index, label);
    if (op == "Relu") return unary(node, index, label, nn::GraphOp::relu, {});
    if (op == "Clip") return clip(node, index, label);
    if (op == "Add") return add(node, index, label);
    if (op == "Concat") return concat(node, index, label);
    if (op == "MaxPool" || op == "AveragePool") return pool(node, index, label);
    if (op == "GlobalAveragePool") return unary(node, index, label, nn::GraphOp::global_avg_pool, {});
    if (op == "Flatten" || op == "Reshape" || op == "Squeeze") return flatten(node, index, label);
    if (op == "Gemm" || op == "MatMul") return matmul(node, index, label);
    if (op == "Pad") {
      // PyTorch writes a Pad of zeros before some average poolings: a no-op.
      const Attributes a(node, label, source_, {"mode", "pads", "value"});
      if (a.text("mode", "constant") != "constant") a.fail("mode", a.text("mode", ""), "constant");
      std::vector<int64_t> pads = a.integers("pads", {});
      if (node.input_size() > 1)
        for (double v : constant(node, 1, label, "pads").values) pads.push_back(static_cast<int64_t>(v));
      if (!std::all_of(pads.begin(), pads.end(), [](int64_t p) { return p == 0; }))
        a.fail("pads", dims_text(pads), "all zero (a padding of its own is not supported; pad inside the Conv or pooling)");
      ++dropped_;
      alias(node, label, activation(node, 0, label));
      return;
    }
    if (op == "Identity" || op == "Dropout") {
      const Attributes a(node, label, source_, op == "Dropout" ? std::initializer_list<std::string_view>{"seed", "ratio"}
                                                               : std::initializer_list<std::string_view>{});
      for (int i = 1; i < node.output_size(); ++i)
        if (!node.output(i).empty())
          throw FormatError(fmt::format("{}: {}: the dropout mask output '{}' is not supported", source_, label,
                                        node.output(i)));
      ++dropped_;
      alias(node, label, activation(node, 0, label));
      return;
    }
    throw FormatError(fmt::format("{}: {}: operator '{}' is not supported (docs/onnx.md lists the supported operators)",
                                  source_, label, op));
  }

  void define_constant(const onnx::NodeProto& node, const std::string& label, Constant c) {
    const std::string& out = node.output(0);
    if (shapes_.contains(out) || constants_.contains(out) || aliases_.contains(out))
      throw FormatError(fmt::format("{}: {}: output '{}' is written twice", source_, label, out));
    constants_[out] = std::move(c);
  }

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

  void conv(const onnx::NodeProto& node, int index, const std::string& label) {
    const Attributes a(node, label, source_, {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"});
    const std::string x = activation(node, 0, label);
    const Shape& in = shapes_.at(x);
    if (in.size() != 4) throw FormatError(fmt::format("{}: {}: input {} is not [N, C, H, W]", source_, label, shape_to_string(in)));
    const Constant& w = constant(node, 1, label, "weight");
    if (w.dims.size() != 4) throw FormatError(fmt::format("{}: {}: weight {} is not 4-D", source_, label, dims_text(w.dims)));
    const std::vector<int64_t> kernel = a.integers("kernel_shape", {w.dims[2], w.dims[3]});
    if (kernel != std::vector<int64_t>{w.dims[2], w.dims[3]})
      a.fail("kernel_shape", dims_text(kernel), fmt::format("the weight's {}x{}", w.dims[2], w.dims[3]));
    const Window win = window(a, kernel);
    const int64_t groups = a.integer("group", 1);
    if (groups < 1 || in[1] % groups != 0 || w.dims[0] % groups != 0 || w.dims[1] * groups != in[1])
      a.fail("group", std::to_string(groups),
             fmt::format("a group count dividing the {} input and {} output channels with weight {}", in[1], w.dims[0],
                         dims_text(w.dims)));
    const bool has_bias = node.input_size() > 2 && !node.input(2).empty();
    nn::Conv2dOptions o;
    o.in_channels = in[1];
    o.out_channels = w.dims[0];
    o.kernel_h = win.kh;
    o.kernel_w = win.kw;
    o.stride_h = win.sh;
    o.stride_w = win.sw;
    o.pad_h = win.ph;
    o.pad_w = win.pw;
    o.groups = groups;
    o.bias = has_bias;
    const std::string name = module_name(node, index, node.input(1));
    Shape out;
    try {
      out = o.output_shape(in, label);
    } catch (const Error& e) {
      throw FormatError(fmt::format("{}: {}", source_, e.what()));
    }
    std::vector<std::pair<std::string, Tensor>> t = {{"weight", to_tensor(w, o.weight_shape())}};
    if (has_bias) {
      const Constant& b = constant(node, 2, label, "bias");
      if (b.numel() != o.out_channels)
        throw FormatError(fmt::format("{}: {}: bias {} for {} output channels", source_, label, dims_text(b.dims), o.out_channels));
      t.emplace_back("bias", to_tensor(b, {o.out_channels}));
    }
    add_node(nn::GraphOp::conv, name, {x}, node).conv = o;
    set_weights(name, std::move(t));
    define(node, label, out);
  }

  void batch_norm(const onnx::NodeProto& node, int index, const std::string& label) {
    const Attributes a(node, label, source_, {"epsilon", "momentum", "training_mode", "spatial"});
    if (a.integer("training_mode", 0) != 0)
      a.fail("training_mode", std::to_string(a.integer("training_mode", 0)), "0 (an inference graph)");
    if (a.integer("spatial", 1) != 1) a.fail("spatial", std::to_string(a.integer("spatial", 1)), "1");
    for (int i = 1; i < node.output_size(); ++i)
      if (!node.output(i).empty())
        throw FormatError(fmt::format("{}: {}: output {} ('{}', training statistics) is not supported", source_, label,
                                      i, node.output(i)));
    const std::string x = activation(node, 0, label);
    const Shape& in = shapes_.at(x);
    if (in.size() != 4) throw FormatError(fmt::format("{}: {}: input {} is not [N, C, H, W]", source_, label, shape_to_string(in)));
    const char* roles[] = {"scale", "bias", "mean", "var"};
    std::vector<std::pair<std::string, Tensor>> t;
    const char* local[] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; ++i) {
      const Constant& c = constant(node, i + 1, label, roles[i]);
      if (c.numel() != in[1])
        throw FormatError(fmt::format("{}: {}: {} has {} values for {} channels", source_, label, roles[i], c.numel(), in[1]));
      t.emplace_back(local[i], to_tensor(c, {in[1]}));
    }
    const float eps = a.real("epsilon", 1e-5f), momentum = a.real("momentum", 0.9f);
    if (!(eps > 0.0f)) a.fail("epsilon", fmt::format("{}", eps), "> 0");
    if (!(momentum >= 0.0f && momentum <= 1.0f)) a.fail("momentum", fmt::format("{}", momentum), "in [0, 1]");
    const std::string name = module_name(node, index, node.input(1));
    nn::GraphNode& n = add_node(nn::GraphOp::batch_norm, name, {x}, node);
    n.channels = in[1];
    n.eps = eps;
    n.momentum = 1.0f - momentum;  // ONNX keeps `momentum` of the running value, nn mixes in `momentum` of the batch
    set_weights(name, std::move(t));
    define(node, label, in);
  }

  void clip(const onnx::NodeProto& node, int index, const std::string& label) {
    const Attributes a(node, label, source_, {"min", "max"});  // attributes before opset 11, inputs since
    double lo = a.real("min", -INFINITY), hi = a.real("max", INFINITY);
    auto bound = [&](int i, double& v, const char* role) {
      if (node.input_size() > i && !node.input(i).empty()) {
        const Constant& c = constant(node, i, label, role);
        if (c.numel() != 1) throw FormatError(fmt::format("{}: {}: {} is not a scalar", source_, label, role));
        v = c.values[0];
      }
    };
    bound(1, lo, "min");
    bound(2, hi, "max");
    nn::GraphOp op;
    if (lo == 0.0 && hi == 6.0) op = nn::GraphOp::relu6;
    else if (lo == 0.0 && std::isinf(hi)) op = nn::GraphOp::relu;
    else
      throw FormatError(fmt::format("{}: {}: Clip to [{}, {}]: bitmix supports Clip as ReLU ([0, inf)) and ReLU6 ([0, "
                                    "6]) only",
                                    source_, label, lo, hi));
    const std::string x = activation(node, 0, label);
    add_node(op, module_name(node, index, ""), {x}, node);
    define(node, label, shapes_.at(x));
  }

  void add(const onnx::NodeProto& node, int index, const std::string& label) {
    (void)Attributes(node, label, source_, {});
    if (node.input_size() != 2) throw FormatError(fmt::format("{}: {}: expected 2 inputs", source_, label));
    // A constant operand is the bias of the linear layer just before it (MatMul + Add).
    for (int c = 0; c < 2; ++c) {
      if (!is_constant(node.input(c))) continue;
      const std::string x = activation(node, 1 - c, label);
      auto it = std::find_if(spec_.nodes.begin(), spec_.nodes.end(), [&](const nn::GraphNode& n) { return n.output == x; });
      if (it == spec_.nodes.end() || it->op != nn::GraphOp::linear || it->bias)
        throw FormatError(fmt::format("{}: {}: adding the constant '{}' is supported only as the bias of a MatMul "
                                      "without one",
                                      source_, label, node.input(c)));
      const Constant& b = constants_.at(node.input(c));
      if (b.numel() != it->out_features)
        throw FormatError(fmt::format("{}: {}: bias {} for {} features", source_, label, dims_text(b.dims), it->out_features));
      it->bias = true;
      weights_[it->name].emplace_back("bias", to_tensor(b, {it->out_features}));
      alias(node, label, x);
      return;
    }
    const std::string x = activation(node, 0, label), y = activation(node, 1, label);
    if (shapes_.at(x) != shapes_.at(y))
      throw FormatError(fmt::format("{}: {}: adds {} and {}; bitmix adds tensors of one shape (no broadcasting)", source_,
                                    label, shape_to_string(shapes_.at(x)), shape_to_string(shapes_.at(y))));
    add_node(nn::GraphOp::add, module_name(node, index, ""), {x, y}, node);
    define(node, label, shapes_.at(x));
  }

  void concat(const onnx::NodeProto& node, int index, const std::string& label) {
    const Attributes a(node, label, source_, {"axis"});
    std::vector<std::string> xs;
    for (int i = 0; i < node.input_size(); ++i) xs.push_back(activation(node, i, label));
    Shape out = shapes_.at(xs[0]);
    const int64_t axis = a.integer("axis", 1);
    const auto rank = static_cast<int64_t>(out.size());
    if (axis != 1 && axis != 1 - rank) a.fail("axis", std::to_string(axis), "1 (channels)");
    if (xs.size() < 2) throw FormatError(fmt::format("{}: {}: fewer than two inputs", source_, label));
    out[1] = 0;
    for (const std::string& x : xs) {
      Shape s = shapes_.at(x);
      if (s.size() != out.size()) throw FormatError(fmt::format("{}: {}: inputs of different ranks", source_, label));
      out[1] += s[1];
      s[1] = out[1];
      if (s != out)
        throw FormatError(fmt::format("{}: {}: input '{}' {} does not match the others outside the channel axis",
                                      source_, label, x, shape_to_string(shapes_.at(x))));
    }
    add_node(nn::GraphOp::concat, module_name(node, index, ""), xs, node);
    define(node, label, out);
  }

  void pool(const onnx::NodeProto& node, int index, const std::string& label) {
    const bool max = node.op_type() == "MaxPool";
    const Attributes a = max ? Attributes(node, label, source_,
                                          {"kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad",
                                           "storage_order"})
                             : Attributes(node, label, source_,
                                          {"kernel_shape", "strides", "pads", "ceil_mode", "auto_pad", "count_include_pad"});
    if (a.integer("ceil_mode", 0) != 0) a.fail("ceil_mode", std::to_string(a.integer("ceil_mode", 0)), "0 (floor)");
    if (a.integer("storage_order", 0) != 0) a.fail("storage_order", "1", "0");
    if (!a.has("kernel_shape")) throw FormatError(fmt::format("{}: {}: missing attribute 'kernel_shape'", source_, label));
    const Window w = window(a, a.integers("kernel_shape", {}));
    if (!max && (w.ph > 0 || w.pw > 0) && a.integer("count_include_pad", 0) == 0)
      a.fail("count_include_pad", "0", "1 with padding (bitmix's average pooling counts padded positions, as PyTorch's "
                                       "default count_include_pad=True)");
    const std::string x = activation(node, 0, label);
    nn::Pool2dOptions o;
    o.kernel_h = w.kh;
    o.kernel_w = w.kw;
    o.stride_h = w.sh;
    o.stride_w = w.sw;
    o.pad_h = w.ph;
    o.pad_w = w.pw;
    Shape out;
    try {
      out = o.output_shape(shapes_.at(x), label);
    } catch (const Error& e) {
      throw FormatError(fmt::format("{}: {}", source_, e.what()));
    }
    add_node(max ? nn::GraphOp::max_pool : nn::GraphOp::avg_pool, module_name(node, index, ""), {x}, node).pool = o;
    define(node, label, out);
  }

  // Flatten(axis 1), Reshape to [N, rest] and Squeeze of the trailing 1x1 of a global pooling.
  void flatten(const onnx::NodeProto& node, int index, const std::string& label) {
    const std::string& op = node.op_type();
    const Attributes a = op == "Flatten" ? Attributes(node, label, source_, {"axis"})
                         : op == "Reshape" ? Attributes(node, label, source_, {"allowzero"})
                                           : Attributes(node, label, source_, {"axes"});
    const std::string x = activation(node, 0, label);
    const Shape& in = shapes_.at(x);
    int64_t rest = 1;
    for (std::size_t i = 1; i < in.size(); ++i) rest *= in[i];
    if (op == "Flatten") {
      if (a.integer("axis", 1) != 1) a.fail("axis", std::to_string(a.integer("axis", 1)), "1 (flatten to [N, rest])");
    } else if (op == "Reshape") {
      const Constant& s = constant(node, 1, label, "shape");
      std::vector<int64_t> t;
      for (double v : s.values) t.push_back(static_cast<int64_t>(v));
      const bool ok = t.size() == 2 && (t[0] == -1 || t[0] == 0 || t[0] == batch_) && (t[1] == -1 || t[1] == rest) &&
                      !(t[0] == -1 && t[1] == -1);
      if (!ok)
        throw FormatError(fmt::format("{}: {}: reshape of {} to {}: bitmix supports reshapes to [N, {}] (flattening "
                                      "before the classifier) only",
                                      source_, label, shape_to_string(in), dims_text(t), rest));
    } else {
      std::vector<int64_t> axes = a.integers("axes", {});
      if (node.input_size() > 1)
        for (double v : constant(node, 1, label, "axes").values) axes.push_back(static_cast<int64_t>(v));
      // nn's shapes of a global pooling are already [N, C]: squeezing ONNX's 1x1 is a no-op.
      const bool after_gap = in.size() == 2 && (axes == std::vector<int64_t>{2, 3} || axes == std::vector<int64_t>{-2, -1} ||
                                                axes == std::vector<int64_t>{3, 2});
      if (!after_gap)
        throw FormatError(fmt::format("{}: {}: Squeeze of {} with axes {}: supported only to drop the 1x1 of a global "
                                      "average pooling",
                                      source_, label, shape_to_string(in), dims_text(axes)));
    }
    if (in.size() == 2) {  // already [N, features]
      alias(node, label, x);
      return;
    }
    add_node(nn::GraphOp::flatten, module_name(node, index, ""), {x}, node);
    define(node, label, {in[0], rest});
  }

  void matmul(const onnx::NodeProto& node, int index, const std::string& label) {
    const bool gemm = node.op_type() == "Gemm";
    const Attributes a = gemm ? Attributes(node, label, source_, {"alpha", "beta", "transA", "transB"})
                              : Attributes(node, label, source_, {});
    if (a.real("alpha", 1.0f) != 1.0f) a.fail("alpha", fmt::format("{}", a.real("alpha", 1.0f)), "1");
    if (a.real("beta", 1.0f) != 1.0f) a.fail("beta", fmt::format("{}", a.real("beta", 1.0f)), "1");
    if (a.integer("transA", 0) != 0) a.fail("transA", "1", "0");
    const bool trans_b = a.integer("transB", 0) != 0;
    const std::string x = activation(node, 0, label);
    const Shape& in = shapes_.at(x);
    if (in.size() != 2)
      throw FormatError(fmt::format("{}: {}: input {} is not [N, features] (flatten before the classifier)", source_,
                                    label, shape_to_string(in)));
    const Constant& w = constant(node, 1, label, "weight");
    if (w.dims.size() != 2) throw FormatError(fmt::format("{}: {}: weight {} is not 2-D", source_, label, dims_text(w.dims)));
    const int64_t fin = trans_b ? w.dims[1] : w.dims[0], fout = trans_b ? w.dims[0] : w.dims[1];
    if (fin != in[1])
      throw FormatError(fmt::format("{}: {}: weight {} for {} input features", source_, label, dims_text(w.dims), in[1]));
    Tensor weight({fout, fin});
    for (int64_t o = 0; o < fout; ++o)
      for (int64_t i = 0; i < fin; ++i)
        weight[o * fin + i] = static_cast<float>(w.values[static_cast<std::size_t>(trans_b ? o * fin + i : i * fout + o)]);
    const std::string name = module_name(node, index, node.input(1));
    std::vector<std::pair<std::string, Tensor>> t = {{"weight", std::move(weight)}};
    bool bias = false;
    if (gemm && node.input_size() > 2 && !node.input(2).empty()) {
      const Constant& b = constant(node, 2, label, "bias");
      if (b.numel() != fout)
        throw FormatError(fmt::format("{}: {}: bias {} for {} outputs (no other broadcasting)", source_, label,
                                      dims_text(b.dims), fout));
      t.emplace_back("bias", to_tensor(b, {fout}));
      bias = true;
    }
    nn::GraphNode& n = add_node(nn::GraphOp::linear, name, {x}, node);
    n.in_features = fin;
    n.out_features = fout;
    n.bias = bias;
    set_weights(name, std::move(t));
    define(node, label, {in[0], fout});
  }

  // ---- After the walk.
  void fuse_and_prune() {
    // Keep the nodes the output depends on.
    std::set<std::string> needed = {spec_.output};
    std::vector<nn::GraphNode> kept;
    for (auto it = spec_.nodes.rbegin(); it != spec_.nodes.rend(); ++it)
      if (needed.contains(it->output)) {
        needed.insert(it->inputs.begin(), it->inputs.end());
        kept.push_back(*it);
      } else {
        notes_.push_back(fmt::format("node '{}' does not contribute to the output; dropped", it->name));
      }
    std::reverse(kept.begin(), kept.end());
    // BatchNorm followed by its only reader, a Relu: one module (as the zoo's blocks are), so
    // the compiler folds both into the convolution's epilogue.
    std::map<std::string, int> readers;
    for (const nn::GraphNode& n : kept)
      for (const std::string& in : n.inputs) ++readers[in];
    ++readers[spec_.output];
    std::vector<nn::GraphNode> fused;
    for (std::size_t i = 0; i < kept.size(); ++i) {
      nn::GraphNode n = kept[i];
      if (n.op == nn::GraphOp::batch_norm && readers[n.output] == 1 && i + 1 < kept.size()) {
        auto next = std::find_if(kept.begin() + static_cast<std::ptrdiff_t>(i) + 1, kept.end(),
                                 [&](const nn::GraphNode& m) {
                                   return std::find(m.inputs.begin(), m.inputs.end(), n.output) != m.inputs.end();
                                 });
        if (next != kept.end() && next->op == nn::GraphOp::relu) {
          n.relu = true;
          n.output = next->output;
          kept.erase(next);
        }
      }
      fused.push_back(std::move(n));
    }
    spec_.nodes = std::move(fused);
  }

  OnnxImport finish(int64_t classes) {
    OnnxImport out;
    out.spec.arch = "graph";
    out.spec.in_channels = image_[0];
    out.spec.image_height = image_[1];
    out.spec.image_width = image_[2];
    out.spec.num_classes = classes;
    out.spec.graph = spec_;
    try {
      out.model = nn::make_model(out.spec);
    } catch (const Error& e) {
      throw FormatError(fmt::format("{}: {}", source_, e.what()));
    }
    for (const nn::GraphNode& n : spec_.nodes) {
      auto it = weights_.find(n.name);
      if (it == weights_.end()) continue;
      nn::Module* m = out.model->find(n.name);
      for (auto& [local, value] : it->second) {
        Tensor* target = nullptr;
        for (Parameter* p : m->own_parameters())
          if (p->name == local) target = &p->value;
        for (Buffer* b : m->own_buffers())
          if (b->name == local) target = &b->value;
        if (target == nullptr || target->shape() != value.shape())
          throw FormatError(fmt::format("{}: node '{}': tensor '{}' {} does not fit the layer", source_, n.name, local,
                                        shape_to_string(value.shape())));
        *target = std::move(value);
      }
    }
    out.model->eval();
    out.opset = opset_;
    out.producer = model_.producer_name() + (model_.producer_version().empty() ? "" : " " + model_.producer_version());
    if (folded_ > 0) notes_.push_back(fmt::format("{} constant nodes folded", folded_));
    if (dropped_ > 0) notes_.push_back(fmt::format("{} Identity/Dropout/zero-Pad nodes removed", dropped_));
    out.notes = notes_;
    read_properties(out);
    return out;
  }

  void read_properties(OnnxImport& out) const {
    auto split = [](const std::string& text) {
      std::vector<std::string> parts;
      std::size_t start = 0;
      while (true) {
        const std::size_t comma = text.find(',', start);
        parts.push_back(text.substr(start, comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      return parts;
    };
    for (const onnx::StringStringEntryProto& p : model_.metadata_props()) {
      if (p.key() == "bitmix.mean" || p.key() == "bitmix.std") {
        std::vector<float> v;
        for (const std::string& s : split(p.value())) {
          char* end = nullptr;
          const float f = std::strtof(s.c_str(), &end);
          if (s.empty() || end == nullptr || *end != '\0' || !std::isfinite(f))
            throw FormatError(fmt::format("{}: metadata property '{}' = '{}': expected comma-separated numbers", source_,
                                          p.key(), p.value()));
          v.push_back(f);
        }
        (p.key() == "bitmix.mean" ? out.normalization.mean : out.normalization.stddev) = v;
      } else if (p.key() == "bitmix.class_names") {
        out.class_names = split(p.value());
      }
    }
  }

  const onnx::ModelProto& model_;
  std::string_view source_;
  int64_t opset_ = 0, batch_ = 1;
  Shape image_;
  std::map<std::string, Constant> constants_;
  std::set<std::string> initializer_names_;
  std::map<std::string, Shape> shapes_;  // computed tensors (by their canonical name), batch 1
  std::map<std::string, std::string> aliases_;
  std::set<std::string> used_names_;
  std::map<std::string, std::vector<std::pair<std::string, Tensor>>> weights_;
  nn::GraphSpec spec_;
  std::vector<std::string> notes_;
  int folded_ = 0, dropped_ = 0;
};

}  // namespace

OnnxImport import_onnx_bytes(const std::string& bytes, std::string_view source) {
  onnx::ModelProto model;
  if (bytes.empty()) throw FormatError(fmt::format("{}: empty file (not an ONNX model)", source));
  if (!model.ParseFromString(bytes))
    throw FormatError(fmt::format("{}: not a valid ONNX protobuf (truncated or corrupt file)", source));
  return Importer(model, source).run();
}

OnnxImport import_onnx(const std::filesystem::path& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return import_onnx_bytes(std::string(bytes.begin(), bytes.end()), path.string());
}

}  // namespace bitmix::deploy
