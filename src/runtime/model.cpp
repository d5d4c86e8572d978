// The integer model: op validation (ModelBuilder), accessors, statistics and descriptions.
#include "bitmix/runtime/model.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "bitmix/core/error.hpp"
#include "runtime/model_impl.hpp"

namespace bitmix::runtime {
namespace {

// Bounds that keep a forged model from asking for absurd allocations (a value is at most 2^28
// elements per image, 1 GiB of floats) and keep every index inside int64 arithmetic.
constexpr int64_t kMaxExtent = int64_t{1} << 20;
constexpr int64_t kMaxValueElements = int64_t{1} << 28;
constexpr int kMaxBorder = 16;
constexpr int kMaxStride = 64;
constexpr std::size_t kMaxOps = 1 << 16;

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

void check_extents(const std::string& op, const Shape& shape, const char* what) {
  for (int64_t d : shape)
    if (d < 1 || d > kMaxExtent)
      throw ShapeError(fmt::format("op '{}': {} {} has an extent outside [1, {}]", op, what, shape_text(shape),
                                   kMaxExtent));
  if (numel(shape) > kMaxValueElements)
    throw ShapeError(fmt::format("op '{}': {} {} has more than {} elements per image", op, what, shape_text(shape),
                                 kMaxValueElements));
}

}  // namespace

std::string_view value_kind_name(ValueKind kind) { return kind == ValueKind::real ? "real" : "packed"; }

std::string_view op_kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::quantize: return "quantize";
    case OpKind::conv2d: return "conv2d";
    case OpKind::linear: return "linear";
    case OpKind::add: return "add";
    case OpKind::global_avg_pool: return "global_avg_pool";
    case OpKind::max_pool: return "max_pool";
    case OpKind::flatten: return "flatten";
  }
  return "unknown";
}

OpKind parse_op_kind(std::string_view name) {
  for (OpKind k : {OpKind::quantize, OpKind::conv2d, OpKind::linear, OpKind::add, OpKind::global_avg_pool,
                   OpKind::max_pool, OpKind::flatten})
    if (op_kind_name(k) == name) return k;
  throw ArgumentError(fmt::format("op kind '{}': expected one of quantize, conv2d, linear, add, global_avg_pool, "
                                  "max_pool, flatten",
                                  name));
}

std::string_view shortcut_kind_name(ShortcutKind kind) {
  return kind == ShortcutKind::identity ? "identity" : "subsample_pad";
}

std::string shape_text(const Shape& per_image) { return fmt::format("[{}]", fmt::join(per_image, ", ")); }

// ---------------------------------------------------------------------------------------------
ModelBuilder::ModelBuilder(ModelInfo info) : info_(std::move(info)) {
  if (info_.input_shape.size() != 3)
    throw ShapeError(fmt::format("model '{}': input shape {} must be [C, H, W]", info_.name,
                                 shape_text(info_.input_shape)));
  check_extents("input", info_.input_shape, "input shape");
  const auto channels = static_cast<std::size_t>(info_.input_shape[0]);
  if (info_.mean.size() != info_.stddev.size() || (!info_.mean.empty() && info_.mean.size() != channels))
    throw ArgumentError(fmt::format("model '{}': normalization has {} means and {} deviations for {} input channels "
                                    "(expected none or one each per channel)",
                                    info_.name, info_.mean.size(), info_.stddev.size(), channels));
  for (std::size_t c = 0; c < info_.mean.size(); ++c)
    if (!std::isfinite(info_.mean[c]) || !std::isfinite(info_.stddev[c]) || !(info_.stddev[c] > 0.0f))
      throw ArgumentError(fmt::format("model '{}': normalization of channel {} (mean {}, std {}) must be finite with "
                                      "std > 0",
                                      info_.name, c, info_.mean[c], info_.stddev[c]));
  values_.push_back(ValueInfo{ValueKind::real, info_.input_shape, {}, 0});
}

const ValueInfo& ModelBuilder::value(int32_t id) const {
  if (id < 0 || id >= value_count())
    throw ArgumentError(fmt::format("value {} does not exist (the model has {} values)", id, value_count()));
  return values_[static_cast<std::size_t>(id)];
}

const ValueInfo& ModelBuilder::input_of(const std::string& op, int32_t id, ValueKind kind, const char* role) const {
  if (id < 0 || id >= value_count())
    throw ArgumentError(fmt::format("op '{}': {} value {} does not exist (values 0..{} are defined)", op, role, id,
                                    value_count() - 1));
  const ValueInfo& v = values_[static_cast<std::size_t>(id)];
  if (v.kind != kind)
    throw ArgumentError(fmt::format("op '{}': {} value {} is {}, expected {}", op, role, id, value_kind_name(v.kind),
                                    value_kind_name(kind)));
  return v;
}

int32_t ModelBuilder::push(Op op, ValueInfo value) {
  if (op.name.empty()) throw ArgumentError(fmt::format("op {} ({}): empty name", ops_.size(), op_kind_name(op.kind)));
  if (op.name.size() > 200) throw ArgumentError(fmt::format("op '{}...': name longer than 200 bytes", op.name.substr(0, 40)));
  for (const Op& other : ops_)
    if (other.name == op.name) throw ArgumentError(fmt::format("op '{}': the name is used twice", op.name));
  if (ops_.size() >= kMaxOps) throw ArgumentError(fmt::format("op '{}': more than {} ops", op.name, kMaxOps));
  check_extents(op.name, value.shape, "output");
  op.output = value_count();
  ops_.push_back(std::move(op));
  values_.push_back(std::move(value));
  return static_cast<int32_t>(values_.size() - 1);
}

int32_t ModelBuilder::quantize(std::string name, int32_t x, QuantizeParams params, LayerNotes notes) {
  const ValueInfo& in = input_of(name, x, ValueKind::real, "input");
  kernels::validate(params.quant, fmt::format("op '{}'", name));
  if (params.border < 0 || params.border > kMaxBorder)
    throw ArgumentError(fmt::format("op '{}': border {} outside [0, {}]", name, params.border, kMaxBorder));
  const int32_t top = params.quant.max_code();
  if (params.max_code == -1) params.max_code = top;
  if (params.min_code < 0 || params.min_code > params.max_code || params.max_code > top)
    throw ArgumentError(fmt::format("op '{}': code range [{}, {}] must lie within [0, {}] and not be empty", name,
                                    params.min_code, params.max_code, top));
  if (params.normalize && x != input())
    throw ArgumentError(fmt::format("op '{}': normalization applies to the model input (value 0) only, not value {}",
                                    name, x));
  if (params.normalize && info_.mean.empty())
    throw ArgumentError(fmt::format("op '{}': asks for the input normalization but the model has none", name));
  Shape shape = in.shape;
  if (shape.size() == 1) shape = {shape[0], 1, 1};
  if (shape.size() != 3)
    throw ShapeError(fmt::format("op '{}': input {} must be [C, H, W] or [M]", name, shape_text(in.shape)));
  ValueInfo out{ValueKind::packed, shape, params.quant, params.border};
  Op op;
  op.kind = OpKind::quantize;
  op.name = std::move(name);
  op.inputs = {x};
  op.params = params;
  op.notes = std::move(notes);
  return push(std::move(op), std::move(out));
}

int32_t ModelBuilder::add_matmul(OpKind kind, std::string name, int32_t x, ConvParams params, LayerNotes notes) {
  const ValueInfo& in = input_of(name, x, ValueKind::packed, "input");
  if (params.weights.empty()) throw ArgumentError(fmt::format("op '{}': no weights", name));
  const kernels::WeightSpec& w = params.weights.spec();
  const kernels::Epilogue& e = params.epilogue;
  if (w.in_channels != in.shape[0])
    throw ShapeError(fmt::format("op '{}': weights expect {} input channels, the input {} has {}", name, w.in_channels,
                                 shape_text(in.shape), in.shape[0]));
  if (e.channels() != w.out_channels)
    throw ArgumentError(fmt::format("op '{}': epilogue has {} channels for {} output channels", name, e.channels(),
                                    w.out_channels));
  const kernels::Conv2dParams& p = params.conv;
  if (p.stride_h < 1 || p.stride_w < 1 || p.stride_h > kMaxStride || p.stride_w > kMaxStride)
    throw ArgumentError(fmt::format("op '{}': stride {}x{} outside [1, {}]", name, p.stride_h, p.stride_w, kMaxStride));
  if (p.pad_h < 0 || p.pad_w < 0 || p.pad_h > in.border || p.pad_w > in.border)
    throw ArgumentError(fmt::format("op '{}': padding {}x{} must be >= 0 and at most the input's border {}", name,
                                    p.pad_h, p.pad_w, in.border));
  // The kernels' int32 accumulator bound (docs/kernels.md): reduction * 2^(M+K+1) < 2^31.
  const int64_t reduction = (w.depthwise ? 1 : w.in_channels) * w.kernel_h * w.kernel_w;
  if (reduction >= (int64_t{1} << (30 - w.bits - in.quant.bits)))
    throw ArgumentError(fmt::format("op '{}': a reduction over {} terms at {}-bit weights and {}-bit activations could "
                                    "overflow the int32 accumulator",
                                    name, reduction, w.bits, in.quant.bits));
  Shape out_shape;
  if (kind == OpKind::linear) {
    if (w.depthwise || w.kernel_h != 1 || w.kernel_w != 1)
      throw ArgumentError(fmt::format("op '{}': a linear layer needs dense 1x1 weights, got {}x{}{}", name, w.kernel_h,
                                      w.kernel_w, w.depthwise ? " depthwise" : ""));
    if (in.shape[1] != 1 || in.shape[2] != 1)
      throw ShapeError(fmt::format("op '{}': linear input {} must be [K, 1, 1]", name, shape_text(in.shape)));
    if (p.stride_h != 1 || p.stride_w != 1 || p.pad_h != 0 || p.pad_w != 0)
      throw ArgumentError(fmt::format("op '{}': a linear layer has no stride or padding", name));
    out_shape = e.requantizes() ? Shape{w.out_channels, 1, 1} : Shape{w.out_channels};
  } else {
    const std::string what = fmt::format("op '{}'", name);
    out_shape = {w.out_channels, kernels::conv_output_size(in.shape[1], w.kernel_h, p.stride_h, p.pad_h, what.c_str()),
                 kernels::conv_output_size(in.shape[2], w.kernel_w, p.stride_w, p.pad_w, what.c_str())};
  }
  ValueInfo out;
  if (e.requantizes()) {
    out = ValueInfo{ValueKind::packed, out_shape, e.out_quant(), e.out_border()};
    if (e.out_border() < 0 || e.out_border() > kMaxBorder)
      throw ArgumentError(fmt::format("op '{}': output border {} outside [0, {}]", name, e.out_border(), kMaxBorder));
  } else {
    out = ValueInfo{ValueKind::real, out_shape, {}, 0};
  }
  Op op;
  op.kind = kind;
  op.name = std::move(name);
  op.inputs = {x};
  op.params = std::move(params);
  op.notes = std::move(notes);
  return push(std::move(op), std::move(out));
}

int32_t ModelBuilder::conv2d(std::string name, int32_t x, ConvParams params, LayerNotes notes) {
  return add_matmul(OpKind::conv2d, std::move(name), x, std::move(params), std::move(notes));
}

int32_t ModelBuilder::linear(std::string name, int32_t x, ConvParams params, LayerNotes notes) {
  return add_matmul(OpKind::linear, std::move(name), x, std::move(params), std::move(notes));
}

int32_t ModelBuilder::add(std::string name, int32_t branch, int32_t shortcut, AddParams params) {
  const ValueInfo& b = input_of(name, branch, ValueKind::real, "branch");
  const ValueInfo& s = input_of(name, shortcut, ValueKind::real, "shortcut");
  if (b.shape.size() != 3 || s.shape.size() != 3)
    throw ShapeError(fmt::format("op '{}': branch {} and shortcut {} must be [C, H, W]", name, shape_text(b.shape),
                                 shape_text(s.shape)));
  if (params.shortcut == ShortcutKind::identity) {
    if (b.shape != s.shape)
      throw ShapeError(fmt::format("op '{}': identity shortcut {} does not match the branch {}", name,
                                   shape_text(s.shape), shape_text(b.shape)));
    params.stride = 1;
    params.channel_offset = 0;
  } else {
    if (params.stride < 1 || params.stride > kMaxStride)
      throw ArgumentError(fmt::format("op '{}': shortcut stride {} outside [1, {}]", name, params.stride, kMaxStride));
    const int64_t sh = (s.shape[1] + params.stride - 1) / params.stride;
    const int64_t sw = (s.shape[2] + params.stride - 1) / params.stride;
    if (sh != b.shape[1] || sw != b.shape[2])
      throw ShapeError(fmt::format("op '{}': shortcut {} subsampled by {} is {}x{}, the branch {} is {}x{}", name,
                                   shape_text(s.shape), params.stride, sh, sw, shape_text(b.shape), b.shape[1],
                                   b.shape[2]));
    if (params.channel_offset < 0 || params.channel_offset + s.shape[0] > b.shape[0])
      throw ShapeError(fmt::format("op '{}': {} shortcut channels at offset {} do not fit in the branch's {}", name,
                                   s.shape[0], params.channel_offset, b.shape[0]));
  }
  ValueInfo out{ValueKind::real, b.shape, {}, 0};
  Op op;
  op.kind = OpKind::add;
  op.name = std::move(name);
  op.inputs = {branch, shortcut};
  op.params = params;
  return push(std::move(op), std::move(out));
}

int32_t ModelBuilder::global_avg_pool(std::string name, int32_t x) {
  const ValueInfo& in = input_of(name, x, ValueKind::real, "input");
  if (in.shape.size() != 3)
    throw ShapeError(fmt::format("op '{}': input {} must be [C, H, W]", name, shape_text(in.shape)));
  ValueInfo out{ValueKind::real, {in.shape[0], 1, 1}, {}, 0};
  Op op;
  op.kind = OpKind::global_avg_pool;
  op.name = std::move(name);
  op.inputs = {x};
  return push(std::move(op), std::move(out));
}

int32_t ModelBuilder::max_pool(std::string name, int32_t x, PoolParams params) {
  const ValueInfo& in = input_of(name, x, ValueKind::real, "input");
  if (in.shape.size() != 3)
    throw ShapeError(fmt::format("op '{}': input {} must be [C, H, W]", name, shape_text(in.shape)));
  if (params.kernel < 1 || params.kernel > kMaxStride || params.stride < 1 || params.stride > kMaxStride ||
      params.padding < 0 || 2 * params.padding > params.kernel)
    throw ArgumentError(fmt::format("op '{}': max pooling kernel {}, stride {}, padding {}: expected kernel and stride "
                                    "in [1, {}] and padding at most half the kernel",
                                    name, params.kernel, params.stride, params.padding, kMaxStride));
  const int64_t oh = (in.shape[1] + 2 * params.padding - params.kernel) / params.stride + 1;
  const int64_t ow = (in.shape[2] + 2 * params.padding - params.kernel) / params.stride + 1;
  if (in.shape[1] + 2 * params.padding < params.kernel || in.shape[2] + 2 * params.padding < params.kernel)
    throw ShapeError(fmt::format("op '{}': a {}x{} window does not fit the input {}", name, params.kernel,
                                 params.kernel, shape_text(in.shape)));
  ValueInfo out{ValueKind::real, {in.shape[0], oh, ow}, {}, 0};
  Op op;
  op.kind = OpKind::max_pool;
  op.name = std::move(name);
  op.inputs = {x};
  op.params = params;
  return push(std::move(op), std::move(out));
}

int32_t ModelBuilder::flatten(std::string name, int32_t x) {
  const ValueInfo& in = input_of(name, x, ValueKind::real, "input");
  ValueInfo out{ValueKind::real, {numel(in.shape), 1, 1}, {}, 0};
  Op op;
  op.kind = OpKind::flatten;
  op.name = std::move(name);
  op.inputs = {x};
  return push(std::move(op), std::move(out));
}

Model ModelBuilder::finish(int32_t output) {
  if (ops_.empty()) throw ArgumentError(fmt::format("model '{}': no ops", info_.name));
  if (output != value_count() - 1)
    throw ArgumentError(fmt::format("model '{}': the output must be the last op's value ({}), got {}", info_.name,
                                    value_count() - 1, output));
  const ValueInfo& out = values_.back();
  if (out.kind != ValueKind::real || out.shape.size() != 1)
    throw ShapeError(fmt::format("model '{}': the output (op '{}') is {} {}, expected real logits [classes]",
                                 info_.name, ops_.back().name, value_kind_name(out.kind), shape_text(out.shape)));
  if (!info_.class_names.empty() && static_cast<int64_t>(info_.class_names.size()) != out.shape[0])
    throw ArgumentError(fmt::format("model '{}': {} class names for {} outputs", info_.name, info_.class_names.size(),
                                    out.shape[0]));
  auto impl = std::make_shared<Model::Impl>();
  impl->info = std::move(info_);
  impl->values = std::move(values_);
  impl->ops = std::move(ops_);
  impl->output = output;
  Model model;
  model.impl_ = std::move(impl);
  info_ = ModelInfo{};
  values_.clear();
  ops_.clear();
  return model;
}

// ---------------------------------------------------------------------------------------------
namespace {
const Model::Impl& require(const std::shared_ptr<const Model::Impl>& impl) {
  if (!impl) throw ArgumentError("runtime::Model: the model is empty (not loaded or built)");
  return *impl;
}
}  // namespace

const ModelInfo& Model::info() const { return require(impl_).info; }
const std::vector<Op>& Model::ops() const { return require(impl_).ops; }
const std::vector<ValueInfo>& Model::values() const { return require(impl_).values; }
int32_t Model::output() const { return require(impl_).output; }
int64_t Model::num_classes() const { return values().at(static_cast<std::size_t>(output())).shape[0]; }

ModelStats Model::stats() const {
  ModelStats s;
  const Impl& m = require(impl_);
  for (const Op& op : m.ops) {
    if (op.kind != OpKind::conv2d && op.kind != OpKind::linear) continue;
    const ConvParams& c = op.conv();
    const kernels::WeightSpec& w = c.weights.spec();
    const ValueInfo& in = m.values[static_cast<std::size_t>(op.inputs[0])];
    const ValueInfo& out = m.values[static_cast<std::size_t>(op.output)];
    const int64_t pixels = out.shape.size() == 3 ? out.shape[1] * out.shape[2] : 1;
    const int64_t macs = w.out_channels * pixels * (w.depthwise ? 1 : w.in_channels) * w.kernel_h * w.kernel_w;
    s.weight_count += w.code_count();
    s.packed_weight_bytes += static_cast<int64_t>(c.weights.words().size() * sizeof(uint32_t));
    s.epilogue_bytes += 2 * w.out_channels * static_cast<int64_t>(sizeof(float));
    s.float_parameter_bytes += (w.code_count() + w.out_channels) * static_cast<int64_t>(sizeof(float));
    s.macs += macs;
    s.bitops += macs * w.bits * in.quant.bits;
  }
  return s;
}

std::string describe(const Model& model, const Op& op) {
  const auto& values = model.values();
  auto value = [&](int32_t id) -> const ValueInfo& { return values.at(static_cast<std::size_t>(id)); };
  const ValueInfo& out = value(op.output);
  switch (op.kind) {
    case OpKind::quantize: {
      const QuantizeParams& q = op.quantize();
      std::string text = fmt::format("quantize {}-bit", q.quant.bits);
      if (q.normalize) text += " (normalized input)";
      if (q.min_code != 0 || q.max_code != q.quant.max_code())
        text += fmt::format(" codes {}..{}", q.min_code, q.max_code);
      return text;
    }
    case OpKind::conv2d:
    case OpKind::linear: {
      const ConvParams& c = op.conv();
      const kernels::WeightSpec& w = c.weights.spec();
      const int a_bits = value(op.inputs[0]).quant.bits;
      std::string text =
          op.kind == OpKind::conv2d
              ? fmt::format("conv {}x{}/{}{} {}->{} W{}A{}", w.kernel_h, w.kernel_w, c.conv.stride_h,
                            w.depthwise ? " dw" : "", w.in_channels, w.out_channels, w.bits, a_bits)
              : fmt::format("linear {}->{} W{}A{}", w.in_channels, w.out_channels, w.bits, a_bits);
      if (c.epilogue.relu()) text += " +relu";
      text += out.kind == ValueKind::packed ? fmt::format(" -> A{}", out.quant.bits) : std::string(" -> float");
      return text;
    }
    case OpKind::add: {
      const AddParams& a = op.add();
      std::string text = a.shortcut == ShortcutKind::identity ? "add" : fmt::format("add (shortcut /{} pad)", a.stride);
      if (a.relu) text += " +relu";
      return text;
    }
    case OpKind::global_avg_pool: return "global avg pool";
    case OpKind::max_pool: {
      const PoolParams& p = op.pool();
      return fmt::format("max pool {}x{}/{}", p.kernel, p.kernel, p.stride);
    }
    case OpKind::flatten: return "flatten";
  }
  return "?";
}

}  // namespace bitmix::runtime
