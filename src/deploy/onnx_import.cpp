// ONNX import: walks the graph's nodes in file order, folds constant subgraphs, maps each
// remaining node to an nn graph node (or an alias for Identity / Dropout / no-op reshapes),
// fuses what bitmix's layers compute in one module (MatMul + Add, BatchNorm + Relu), then builds
// the GraphModel and loads the file's weights into it. The operators are in onnx_operators.cpp.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/nn/layers.hpp"
#include "onnx_importer.hpp"

namespace bitmix::deploy {
namespace onnx_detail {

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

OnnxImport Importer::run() {
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

void Importer::check_header() {
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

void Importer::read_input(const onnx::GraphProto& g) {
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

std::string Importer::resolve(const std::string& name) const {
  auto it = aliases_.find(name);
  return it != aliases_.end() ? it->second : name;
}

const Constant& Importer::constant(const onnx::NodeProto& node, int i, const std::string& label, const char* role) const {
  if (i >= node.input_size() || node.input(i).empty())
    throw FormatError(fmt::format("{}: {}: missing input {} ({})", source_, label, i, role));
  auto it = constants_.find(node.input(i));
  if (it == constants_.end())
    throw FormatError(fmt::format("{}: {}: input {} ('{}', {}) must be a constant (an initializer); computed weights "
                                  "are not supported",
                                  source_, label, i, node.input(i), role));
  return it->second;
}

std::string Importer::activation(const onnx::NodeProto& node, int i, const std::string& label) const {
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

void Importer::define(const onnx::NodeProto& node, const std::string& label, const Shape& shape) {
  const std::string& out = node.output(0);
  if (out.empty()) throw FormatError(fmt::format("{}: {}: the output has no name", source_, label));
  if (shapes_.contains(out) || constants_.contains(out) || aliases_.contains(out))
    throw FormatError(fmt::format("{}: {}: output '{}' is written twice", source_, label, out));
  shapes_[out] = shape;
}

void Importer::alias(const onnx::NodeProto& node, const std::string& label, const std::string& target) {
  const std::string& out = node.output(0);
  if (shapes_.contains(out) || constants_.contains(out) || aliases_.contains(out))
    throw FormatError(fmt::format("{}: {}: output '{}' is written twice", source_, label, out));
  aliases_[out] = target;
}

std::string Importer::module_name(const onnx::NodeProto& node, int index, const std::string& weight_name) {
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

nn::GraphNode& Importer::add_node(nn::GraphOp op, std::string name, std::vector<std::string> inputs, const onnx::NodeProto& node) {
  nn::GraphNode n;
  n.op = op;
  n.name = std::move(name);
  n.inputs = std::move(inputs);
  n.output = node.output(0);
  spec_.nodes.push_back(std::move(n));
  return spec_.nodes.back();
}

void Importer::set_weights(const std::string& node, std::vector<std::pair<std::string, Tensor>> tensors) {
  weights_[node] = std::move(tensors);
}

Tensor Importer::to_tensor(const Constant& c, const Shape& shape) {
  Tensor t(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(c.values[static_cast<std::size_t>(i)]);
  return t;
}

void Importer::convert(const onnx::NodeProto& node, int index) {
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
  if (op == "QuantizeLinear") return quantize_linear(node, label);
  if (op == "DequantizeLinear") return dequantize_linear(node, index, label);
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

void Importer::define_constant(const onnx::NodeProto& node, const std::string& label, Constant c) {
  const std::string& out = node.output(0);
  if (shapes_.contains(out) || constants_.contains(out) || aliases_.contains(out))
    throw FormatError(fmt::format("{}: {}: output '{}' is written twice", source_, label, out));
  constants_[out] = std::move(c);
}

void Importer::fuse_and_prune() {
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

OnnxImport Importer::finish(int64_t classes) {
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

void Importer::read_properties(OnnxImport& out) const {
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

}  // namespace onnx_detail

OnnxImport import_onnx_bytes(const std::string& bytes, std::string_view source) {
  onnx::ModelProto model;
  if (bytes.empty()) throw FormatError(fmt::format("{}: empty file (not an ONNX model)", source));
  if (!model.ParseFromString(bytes))
    throw FormatError(fmt::format("{}: not a valid ONNX protobuf (truncated or corrupt file)", source));
  return onnx_detail::Importer(model, source).run();
}

OnnxImport import_onnx(const std::filesystem::path& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return import_onnx_bytes(std::string(bytes.begin(), bytes.end()), path.string());
}

}  // namespace bitmix::deploy
