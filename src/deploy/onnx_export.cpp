// ONNX QDQ export of a quantization-aware graph model: every quantized layer reads its input
// through Clip (the bitwidth's code range) -> QuantizeLinear -> DequantizeLinear with the
// activation quantizer's per-tensor scale and zero point, and its weight as integer codes through
// DequantizeLinear with per-output-channel scales, so an ONNX runtime computes what the
// fake-quant model computes. The BitConfig and per-layer bits are metadata properties.
#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/graph.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/quant/quantizer.hpp"
#include "onnx_import.hpp"
#include "onnx_internal.hpp"

namespace bitmix::deploy {
namespace {

class Exporter {
 public:
  Exporter(nn::GraphModel& graph, const nn::ModelSpec& spec) : graph_(graph), spec_(spec) {}

  onnx::ModelProto run(const OnnxExportOptions& options) {
    model_.set_ir_version(8);
    model_.set_producer_name("bitmix");
    model_.set_producer_version(options.producer_version);
    onnx::OperatorSetIdProto* o = model_.add_opset_import();
    o->set_domain("");
    o->set_version(13);  // per-axis DequantizeLinear
    g_ = model_.mutable_graph();
    g_->set_name(spec_.arch);
    value_info(g_->add_input(), "input", {spec_.in_channels, spec_.image_height, spec_.image_width});
    value_info(g_->add_output(), "logits", {spec_.num_classes});
    const Shape image = {spec_.in_channels, spec_.image_height, spec_.image_width};
    for (const nn::LayerQuantizers& l : nn::attached_quantizers(graph_, image)) quantizers_[l.layer] = l;
    const nn::GraphSpec& gs = graph_.spec();
    // Inside, tensors keep their bitmix names (prefixed); Identity nodes rename at the boundary.
    identity("input", name_of(gs.input));
    for (std::size_t i = 0; i < gs.nodes.size(); ++i) node(gs.nodes[i], graph_.node_module(i));
    identity(name_of(gs.output), "logits");
    property("bitmix.mean", join(options.mean));
    property("bitmix.std", join(options.stddev));
    if (!options.class_names.empty()) property("bitmix.class_names", fmt::format("{}", fmt::join(options.class_names, ",")));
    if (!options.bit_config_json.empty()) property("bitmix.bit_config", options.bit_config_json);
    return model_;
  }

 private:
  static std::string join(const std::vector<float>& v) {
    std::string out;
    for (float f : v) out += (out.empty() ? "" : ",") + fmt::format("{}", f);
    return out;
  }
  void property(const std::string& key, const std::string& value) {
    auto* p = model_.add_metadata_props();
    p->set_key(key);
    p->set_value(value);
  }
  static void value_info(onnx::ValueInfoProto* v, const std::string& name, const Shape& per_image) {
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto_DataType_FLOAT);
    t->mutable_shape()->add_dim()->set_dim_param("batch");
    for (int64_t d : per_image) t->mutable_shape()->add_dim()->set_dim_value(d);
  }
  // Graph tensors are prefixed so that they cannot collide with the boundary names.
  static std::string name_of(const std::string& tensor) { return "t_" + tensor; }

  onnx::NodeProto* add(const std::string& op, const std::string& name, std::vector<std::string> in,
                       std::vector<std::string> out) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (auto& s : in) n->add_input(s);
    for (auto& s : out) n->add_output(s);
    return n;
  }
  void identity(const std::string& from, const std::string& to) {
    if (from != to) add("Identity", to + "_identity", {from}, {to});
  }
  static void ints(onnx::NodeProto* n, const std::string& name, std::vector<int64_t> v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void integer(onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void real(onnx::NodeProto* n, const std::string& name, float v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  std::string initializer(const std::string& name, const Tensor& t) {
    onnx::TensorProto* p = g_->add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto_DataType_FLOAT);
    for (int64_t d : t.shape()) p->add_dims(d);
    for (int64_t i = 0; i < t.numel(); ++i) p->add_float_data(t[i]);
    return name;
  }
  std::string scalar(const std::string& name, float v) {
    onnx::TensorProto* p = g_->add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto_DataType_FLOAT);
    p->add_float_data(v);
    return name;
  }
  // Integer codes as INT8 (signed) or UINT8, stored in int32_data as ONNX specifies for both.
  std::string codes(const std::string& name, const std::vector<int32_t>& values, const std::vector<int64_t>& dims,
                    bool is_signed) {
    onnx::TensorProto* p = g_->add_initializer();
    p->set_name(name);
    p->set_data_type(is_signed ? onnx::TensorProto_DataType_INT8 : onnx::TensorProto_DataType_UINT8);
    for (int64_t d : dims) p->add_dims(d);
    for (int32_t v : values) p->add_int32_data(v);
    return name;
  }

  // Clip -> QuantizeLinear -> DequantizeLinear on `x` for the layer's input quantizer.
  std::string quantize_input(const std::string& layer, const std::string& x, const nn::QuantizerTransform& q) {
    quant::QuantParams p;
    try {
      p = q.quantizer().params();
    } catch (const Error& e) {
      throw ArgumentError(fmt::format("layer '{}': input quantizer: {}", layer, e.what()));
    }
    if (p.groups() != 1)
      throw ArgumentError(fmt::format("layer '{}': input quantizer has {} groups; QDQ export takes per-tensor "
                                      "activation scales",
                                      layer, p.groups()));
    const bool is_signed = p.min_code < 0;
    if (is_signed ? (p.min_code < -128 || p.max_code > 127) : p.max_code > 255)
      throw ArgumentError(fmt::format("layer '{}': input codes [{}, {}] do not fit 8 bits", layer, p.min_code, p.max_code));
    const float s = p.scales[0];
    const int32_t z = p.zero_points[0];
    const std::string lo = scalar(layer + ".input_min", s * static_cast<float>(p.min_code - z));
    const std::string hi = scalar(layer + ".input_max", s * static_cast<float>(p.max_code - z));
    const std::string scale = scalar(layer + ".input_scale", s);
    const std::string zp = codes(layer + ".input_zero_point", {z}, {}, is_signed);
    add("Clip", layer + ".input_clip", {x, lo, hi}, {layer + ".input_clipped"});
    add("QuantizeLinear", layer + ".input_quantize", {layer + ".input_clipped", scale, zp}, {layer + ".input_codes"});
    add("DequantizeLinear", layer + ".input_dequantize", {layer + ".input_codes", scale, zp}, {layer + ".input_q"});
    return layer + ".input_q";
  }
  // The weight as codes -> DequantizeLinear (per output channel on axis 0).
  std::string quantize_weight(const std::string& layer, const Tensor& weight, const nn::QuantizerTransform& q) {
    const quant::QuantizedTensor qt = q.quantizer().quantize(weight);
    const quant::QuantParams& p = qt.params;
    const int64_t out = weight.dim(0), groups = p.groups();
    if (groups != 1 && groups != out)
      throw ArgumentError(fmt::format("layer '{}': weight quantizer has {} groups for {} output channels", layer, groups, out));
    const bool is_signed = p.min_code < 0;
    if (is_signed ? (p.min_code < -128 || p.max_code > 127) : p.max_code > 255)
      throw ArgumentError(fmt::format("layer '{}': weight codes [{}, {}] do not fit 8 bits", layer, p.min_code, p.max_code));
    std::vector<int64_t> dims(weight.shape().begin(), weight.shape().end());
    const std::string c = codes(layer + ".weight_codes", qt.codes, dims, is_signed);
    Tensor scales({out});
    std::vector<int32_t> zps(static_cast<std::size_t>(out));
    for (int64_t o = 0; o < out; ++o) {
      scales[o] = p.scales[static_cast<std::size_t>(groups == 1 ? 0 : o)];
      zps[static_cast<std::size_t>(o)] = p.zero_points[static_cast<std::size_t>(groups == 1 ? 0 : o)];
    }
    const std::string s = initializer(layer + ".weight_scale", scales);
    const std::string z = codes(layer + ".weight_zero_point", zps, {out}, is_signed);
    onnx::NodeProto* n = add("DequantizeLinear", layer + ".weight_dequantize", {c, s, z}, {layer + ".weight_q"});
    integer(n, "axis", 0);
    return layer + ".weight_q";
  }

  void node(const nn::GraphNode& n, nn::Module* m) {
    const std::string out = name_of(n.output);
    std::vector<std::string> in;
    for (const std::string& t : n.inputs) in.push_back(name_of(t));
    const std::string& name = n.name;
    switch (n.op) {
      case nn::GraphOp::conv:
      case nn::GraphOp::linear: {
        auto* conv = dynamic_cast<nn::Conv2d*>(m);
        auto* linear = dynamic_cast<nn::Linear*>(m);
        if (conv == nullptr && linear == nullptr) throw Error(fmt::format("graph node '{}': no layer module", name));
        const Tensor& w = conv != nullptr ? conv->weight().value : linear->weight().value;
        const Parameter* bias = conv != nullptr ? conv->bias() : linear->bias();
        std::string x = in[0], weight;
        auto it = quantizers_.find(m);
        const nn::LayerQuantizers* lq = it != quantizers_.end() ? &it->second : nullptr;
        if (lq != nullptr && lq->input != nullptr && !lq->input->bypassed()) x = quantize_input(name, x, *lq->input);
        if (lq != nullptr && lq->weight != nullptr && !lq->weight->bypassed()) weight = quantize_weight(name, w, *lq->weight);
        else weight = initializer(name + ".weight", w);
        std::vector<std::string> args = {x, weight};
        if (bias != nullptr) args.push_back(initializer(name + ".bias", bias->value));
        if (conv != nullptr) {
          const nn::Conv2dOptions& o = conv->options();
          onnx::NodeProto* c = add("Conv", name, args, {out});
          ints(c, "kernel_shape", {o.kernel_h, o.kernel_w});
          ints(c, "strides", {o.stride_h, o.stride_w});
          ints(c, "pads", {o.pad_h, o.pad_w, o.pad_h, o.pad_w});
          integer(c, "group", o.groups);
        } else {
          onnx::NodeProto* c = add("Gemm", name, args, {out});
          integer(c, "transB", 1);
        }
        return;
      }
      case nn::GraphOp::batch_norm: {
        auto* bn = dynamic_cast<nn::BatchNorm2d*>(m);
        if (bn == nullptr) throw Error(fmt::format("graph node '{}': no BatchNorm2d module", name));
        const std::string y = bn->fused_relu() ? out + "_bn" : out;
        onnx::NodeProto* b = add("BatchNormalization", name,
                                 {in[0], initializer(name + ".weight", bn->weight().value),
                                  initializer(name + ".bias", bn->bias().value),
                                  initializer(name + ".running_mean", bn->running_mean().value),
                                  initializer(name + ".running_var", bn->running_var().value)},
                                 {y});
        real(b, "epsilon", bn->options().eps);
        real(b, "momentum", 1.0f - bn->options().momentum);
        if (bn->fused_relu()) add("Relu", name + ".relu", {y}, {out});
        return;
      }
      case nn::GraphOp::relu: add("Relu", name, in, {out}); return;
      case nn::GraphOp::relu6:
        add("Clip", name, {in[0], scalar(name + ".min", 0.0f), scalar(name + ".max", 6.0f)}, {out});
        return;
      case nn::GraphOp::max_pool:
      case nn::GraphOp::avg_pool: {
        onnx::NodeProto* p = add(n.op == nn::GraphOp::max_pool ? "MaxPool" : "AveragePool", name, in, {out});
        ints(p, "kernel_shape", {n.pool.kernel_h, n.pool.kernel_w});
        ints(p, "strides", {n.pool.stride_h, n.pool.stride_w});
        ints(p, "pads", {n.pool.pad_h, n.pool.pad_w, n.pool.pad_h, n.pool.pad_w});
        if (n.op == nn::GraphOp::avg_pool) integer(p, "count_include_pad", 1);
        return;
      }
      case nn::GraphOp::global_avg_pool:
        add("GlobalAveragePool", name, in, {out + "_4d"});
        integer(add("Flatten", name + ".flatten", {out + "_4d"}, {out}), "axis", 1);
        return;
      case nn::GraphOp::flatten: integer(add("Flatten", name, in, {out}), "axis", 1); return;
      case nn::GraphOp::add: add("Add", name, in, {out}); return;
      case nn::GraphOp::concat: integer(add("Concat", name, in, {out}), "axis", 1); return;
      case nn::GraphOp::fake_quant: {
        const bool is_signed = n.min_code < 0;
        const std::string lo = scalar(name + ".min", n.scale * static_cast<float>(n.min_code - n.zero_point));
        const std::string hi = scalar(name + ".max", n.scale * static_cast<float>(n.max_code - n.zero_point));
        const std::string s = scalar(name + ".scale", n.scale);
        const std::string z = codes(name + ".zero_point", {n.zero_point}, {}, is_signed);
        add("Clip", name + ".clip", {in[0], lo, hi}, {out + "_clipped"});
        add("QuantizeLinear", name + ".quantize", {out + "_clipped", s, z}, {out + "_codes"});
        add("DequantizeLinear", name, {out + "_codes", s, z}, {out});
        return;
      }
    }
  }

  nn::GraphModel& graph_;
  const nn::ModelSpec& spec_;
  onnx::ModelProto model_;
  onnx::GraphProto* g_ = nullptr;
  std::map<const nn::Module*, nn::LayerQuantizers> quantizers_;
};

}  // namespace

std::string export_onnx_qdq(nn::Module& model, const nn::ModelSpec& spec, const OnnxExportOptions& options) {
  auto* graph = dynamic_cast<nn::GraphModel*>(&model);
  if (graph == nullptr)
    throw ArgumentError(fmt::format("model '{}': ONNX export takes graph models (bitmix import); the zoo's "
                                    "architectures are exported to .bmx only",
                                    spec.arch));
  return Exporter(*graph, spec).run(options).SerializeAsString();
}

}  // namespace bitmix::deploy
