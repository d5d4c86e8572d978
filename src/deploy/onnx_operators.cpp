// The ONNX importer's operators: each maps one ONNX node (its attributes checked strictly) to a
// node of the nn graph, an alias, or a fused part of an earlier node (docs/onnx.md lists them).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "bitmix/core/error.hpp"
#include "onnx_importer.hpp"

namespace bitmix::deploy::onnx_detail {

Importer::Window Importer::window(const Attributes& a, const std::vector<int64_t>& kernel) const {
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

void Importer::conv(const onnx::NodeProto& node, int index, const std::string& label) {
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

void Importer::batch_norm(const onnx::NodeProto& node, int index, const std::string& label) {
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

void Importer::clip(const onnx::NodeProto& node, int index, const std::string& label) {
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
  else if (only_reader_is(node.output(0), "QuantizeLinear")) {
    // The code range of a QDQ pair below 8 bits (as bitmix's own export writes it).
    clips_[node.output(0)] = Clipped{activation(node, 0, label), lo, hi};
    return;
  } else
    throw FormatError(fmt::format("{}: {}: Clip to [{}, {}]: bitmix supports Clip as ReLU ([0, inf)) and ReLU6 ([0, "
                                  "6]) only, or directly before a QuantizeLinear",
                                  source_, label, lo, hi));
  const std::string x = activation(node, 0, label);
  add_node(op, module_name(node, index, ""), {x}, node);
  define(node, label, shapes_.at(x));
}

bool Importer::only_reader_is(const std::string& tensor, const std::string& op) const {
  int readers = 0;
  bool match = true;
  for (const onnx::NodeProto& n : model_.graph().node())
    for (const std::string& in : n.input())
      if (in == tensor) {
        ++readers;
        match = match && n.op_type() == op;
      }
  for (const onnx::ValueInfoProto& o : model_.graph().output()) readers += o.name() == tensor ? 2 : 0;
  return readers == 1 && match;
}

void Importer::quantize_linear(const onnx::NodeProto& node, const std::string& label) {
  const Attributes a(node, label, source_, {"axis"});
  std::string x = node.input_size() > 0 ? resolve(node.input(0)) : "";
  double lo = -INFINITY, hi = INFINITY;
  if (auto it = clips_.find(x); it != clips_.end()) {
    lo = it->second.lo;
    hi = it->second.hi;
    x = it->second.input;
  } else {
    x = activation(node, 0, label);
  }
  const Constant& scale = constant(node, 1, label, "scale");
  if (scale.numel() != 1 || !(scale.values[0] > 0))
    throw FormatError(fmt::format("{}: {}: scale {}: bitmix reads per-tensor activation quantization with a "
                                  "positive scale",
                                  source_, label, dims_text(scale.dims)));
  Quantized q;
  q.input = x;
  q.scale = static_cast<float>(scale.values[0]);
  q.min_code = 0;
  q.max_code = 255;
  if (node.input_size() > 2 && !node.input(2).empty()) {
    const Constant& zp = constant(node, 2, label, "zero point");
    if (zp.numel() != 1) throw FormatError(fmt::format("{}: {}: zero point is not a scalar", source_, label));
    if (zp.data_type == onnx::TensorProto_DataType_INT8) {
      q.min_code = -128;
      q.max_code = 127;
    } else if (zp.data_type != onnx::TensorProto_DataType_UINT8) {
      throw FormatError(fmt::format("{}: {}: zero point of data type {}: expected INT8 or UINT8", source_, label,
                                    zp.data_type));
    }
    q.zero_point = static_cast<int32_t>(zp.values[0]);
  }
  // Clip(x, lo, hi) then rounding is a clamp of the codes to round(lo / s) + z .. round(hi / s) + z.
  if (std::isfinite(lo)) q.min_code = std::max(q.min_code, static_cast<int32_t>(std::nearbyint(lo / static_cast<double>(q.scale))) + q.zero_point);
  if (std::isfinite(hi)) q.max_code = std::min(q.max_code, static_cast<int32_t>(std::nearbyint(hi / static_cast<double>(q.scale))) + q.zero_point);
  if (q.min_code > q.zero_point || q.max_code < q.zero_point || q.min_code > q.max_code)
    throw FormatError(fmt::format("{}: {}: the clip range gives codes [{}, {}] around zero point {}", source_, label,
                                  q.min_code, q.max_code, q.zero_point));
  const std::string& out = node.output(0);
  if (shapes_.contains(out) || constants_.contains(out) || quantized_.contains(out))
    throw FormatError(fmt::format("{}: {}: output '{}' is written twice", source_, label, out));
  quantized_[out] = q;
}

void Importer::dequantize_linear(const onnx::NodeProto& node, int index, const std::string& label) {
  const Attributes a(node, label, source_, {"axis"});
  auto it = node.input_size() > 0 ? quantized_.find(node.input(0)) : quantized_.end();
  if (it == quantized_.end())
    throw FormatError(fmt::format("{}: {}: input '{}' is neither constant codes nor the output of a QuantizeLinear",
                                  source_, label, node.input_size() > 0 ? node.input(0) : std::string()));
  const Quantized& q = it->second;
  const Constant& scale = constant(node, 1, label, "scale");
  const int32_t zp = node.input_size() > 2 && !node.input(2).empty()
                         ? static_cast<int32_t>(constant(node, 2, label, "zero point").values.at(0))
                         : 0;
  if (scale.numel() != 1 || static_cast<float>(scale.values[0]) != q.scale || zp != q.zero_point)
    throw FormatError(fmt::format("{}: {}: scale and zero point differ from its QuantizeLinear's", source_, label));
  nn::GraphNode& n = add_node(nn::GraphOp::fake_quant, module_name(node, index, ""), {q.input}, node);
  n.scale = q.scale;
  n.zero_point = q.zero_point;
  n.min_code = q.min_code;
  n.max_code = q.max_code;
  define(node, label, shapes_.at(q.input));
}

void Importer::add(const onnx::NodeProto& node, int index, const std::string& label) {
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

void Importer::concat(const onnx::NodeProto& node, int index, const std::string& label) {
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

void Importer::pool(const onnx::NodeProto& node, int index, const std::string& label) {
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

void Importer::flatten(const onnx::NodeProto& node, int index, const std::string& label) {
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

void Importer::matmul(const onnx::NodeProto& node, int index, const std::string& label) {
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

}  // namespace bitmix::deploy::onnx_detail
