// The deployment compiler: walks a QAT model in forward order and emits runtime ops.
#include "bitmix/deploy/compiler.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <optional>
#include <tuple>

#include "bitmix/core/error.hpp"
#include "bitmix/kernels/activations.hpp"
#include "bitmix/kernels/epilogue.hpp"
#include "bitmix/kernels/weights.hpp"
#include "bitmix/nn/graph.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/quant/quantizer.hpp"

namespace bitmix::deploy {
namespace {

using runtime::ValueKind;

// ---- Quantizer export -------------------------------------------------------------------------

nn::QuantizerTransform& quantizer_of(nn::TensorTransform* transform, const std::string& layer, const char* which) {
  if (transform == nullptr)
    throw ArgumentError(fmt::format("layer '{}': no {} quantizer; the integer runtime needs every conv and linear layer "
                                    "quantized (a float entry in the BitConfig cannot be deployed)",
                                    layer, which));
  auto* q = dynamic_cast<nn::QuantizerTransform*>(transform);
  if (q == nullptr)
    throw ArgumentError(fmt::format("layer '{}': the {} transform is a '{}', not a quantizer (a search mixture? pick "
                                    "bits and fine-tune first)",
                                    layer, which, transform->kind()));
  if (q->spec().kind == quant::QuantizerKind::float_bypass)
    throw ArgumentError(fmt::format("layer '{}': the {} quantizer is 'float'; the integer runtime needs 1-8 bits", layer,
                                    which));
  // Quantizers whose state comes from data must have it (a checkpoint or a forward pass).
  for (Buffer* b : q->quantizer().buffers())
    if (b->name == "initialized" && b->value.numel() > 0 && b->value[0] == 0.0f)
      throw ArgumentError(fmt::format("layer '{}': the {} quantizer ({}) is not initialized: load its state from a "
                                      "fine-tuned checkpoint or calibrate it before compiling",
                                      layer, which, q->spec().kind == quant::QuantizerKind::lsq ? "lsq" : "range"));
  return *q;
}

// The kernels' activation quantizer for a quant::Quantizer. The kernels compute
// clamp(nearbyint(x * (1/s)) + z) with reciprocal = true, where 1/s is rounded to float; quant
// computes round(clamp(x * m)) + z with a multiplier m of its own. The two agree exactly when
// 1.0f / s == m, so we look for such an s next to 1/m.
struct ActivationExport {
  kernels::ActivationQuant quant{};
  float scale = 1.0f;  // the dequantization scale s_a of the fake-quant model
  int32_t min_code = 0, max_code = 0;
  std::optional<std::string> note;  // set when no exact form exists
};

float input_multiplier(const quant::Quantizer& q, const quant::QuantParams& p) {
  const float n = static_cast<float>((1 << q.bits()) - 1);
  switch (q.kind()) {
    case quant::QuantizerKind::pact: {
      // PACT's grid multiplies by n / alpha (bitmix::quant, learned_quantizers.cpp).
      for (Parameter* param : const_cast<quant::Quantizer&>(q).parameters())
        if (param->name == "alpha" && param->value.numel() == 1) {
          float a = param->value[0];
          a = (a >= 1e-12f && std::isfinite(a)) ? a : 1e-12f;
          return n / a;
        }
      return 1.0f / p.scales[0];
    }
    case quant::QuantizerKind::dorefa:
      return n;  // DoReFa activations: round(n * clip(x, 0, 1))
    default:
      return 1.0f / p.scales[0];  // uniform, symmetric, lsq: x * (1 / s)
  }
}

ActivationExport export_activation(const nn::QuantizerTransform& t, const std::string& layer) {
  const quant::Quantizer& q = t.quantizer();
  quant::QuantParams p;
  try {
    p = q.params();
  } catch (const Error& e) {
    throw ArgumentError(fmt::format("layer '{}': input quantizer: {}", layer, e.what()));
  }
  if (p.encoding != quant::CodeEncoding::unsigned_int || p.groups() != 1 || p.code_bits < 1 || p.code_bits > 8)
    throw ArgumentError(fmt::format("layer '{}': input quantizer {} exports {} codes of {} bits in {} groups; the "
                                    "kernels take one unsigned 1-8 bit grid per tensor",
                                    layer, t.quantizer().describe(), quant::to_string(p.encoding), p.code_bits,
                                    p.groups()));
  ActivationExport out;
  out.scale = p.scales[0];
  out.min_code = p.min_code;
  out.max_code = p.max_code;
  const int32_t top = (1 << p.code_bits) - 1;
  if (p.zero_points[0] < 0 || p.zero_points[0] > top || p.min_code < 0 || p.max_code > top)
    throw ArgumentError(fmt::format("layer '{}': input quantizer {}: zero point {} or codes [{}, {}] outside [0, {}]",
                                    layer, t.quantizer().describe(), p.zero_points[0], p.min_code, p.max_code, top));
  const float m = input_multiplier(q, p);
  kernels::ActivationQuant k{p.code_bits, 1.0f / m, p.zero_points[0], true};
  // Search the neighbourhood of 1/m for a scale whose float reciprocal is exactly m.
  float candidate = 1.0f / m;
  bool found = false;
  for (int step = 0; step <= 8 && !found; ++step) {
    for (int dir : {1, -1}) {
      const auto bits = std::bit_cast<int32_t>(1.0f / m) + dir * step;
      candidate = std::bit_cast<float>(bits);
      if (std::isfinite(candidate) && candidate > 0.0f && 1.0f / candidate == m) {
        found = true;
        break;
      }
    }
  }
  if (found) {
    k.scale = candidate;
  } else {
    k.scale = p.scales[0];
    k.reciprocal = false;
    out.note = fmt::format("layer '{}': the input multiplier {} of the {} quantizer has no exact float reciprocal; "
                           "codes use x / {} and can differ from the fake-quant model next to rounding ties",
                           layer, m, t.quantizer().describe(), p.scales[0]);
  }
  out.quant = k;
  return out;
}

struct WeightExport {
  kernels::PackedWeights weights;
  std::vector<float> scales;  // per output channel
  std::vector<float> group_scales;
};

WeightExport export_weights(const nn::QuantizerTransform& t, const Tensor& weight, const kernels::WeightSpec& spec_in,
                            const std::string& layer) {
  quant::QuantizedTensor qt;
  try {
    qt = t.quantizer().quantize(weight);
  } catch (const Error& e) {
    throw ArgumentError(fmt::format("layer '{}': weight quantizer: {}", layer, e.what()));
  }
  const quant::QuantParams& p = qt.params;
  kernels::WeightSpec spec = spec_in;
  if (p.encoding == quant::CodeEncoding::twos_complement) spec.encoding = kernels::WeightEncoding::twos_complement;
  else if (p.encoding == quant::CodeEncoding::odd_levels) spec.encoding = kernels::WeightEncoding::odd_levels;
  else
    throw ArgumentError(fmt::format("layer '{}': weight quantizer {} exports unsigned codes; the kernels take two's "
                                    "complement or odd-level weights",
                                    layer, t.quantizer().describe()));
  if (p.code_bits < 1 || p.code_bits > 8)
    throw ArgumentError(fmt::format("layer '{}': weight quantizer {} needs {}-bit codes; the kernels take 1 to 8 bits",
                                    layer, t.quantizer().describe(), p.code_bits));
  for (int32_t z : p.zero_points)
    if (z != 0)
      throw ArgumentError(fmt::format("layer '{}': weight quantizer {} has a zero point ({}); the bit-serial kernels "
                                      "take weights without one (use symmetric or lsq weights)",
                                      layer, t.quantizer().describe(), z));
  spec.bits = p.code_bits;
  const int64_t groups = p.groups();
  if (groups != 1 && groups != spec.out_channels) {
    if (p.kind == quant::QuantizerKind::dsconv)
      throw ArgumentError(fmt::format(
          "layer '{}': weight quantizer {} has {} blocks per output channel, each with its own scale; the integer "
          "kernels apply one scale per output channel, so a DSConv layer deploys only with one block per output "
          "channel (a block size of at least its {} input channels)",
          layer, t.quantizer().describe(), groups / spec.out_channels, weight.rank() >= 2 ? weight.shape()[1] : 0));
    throw ArgumentError(fmt::format("layer '{}': weight quantizer has {} groups for {} output channels", layer, groups,
                                    spec.out_channels));
  }
  WeightExport out;
  try {
    out.weights = kernels::PackedWeights::pack(qt.codes, spec);
  } catch (const Error& e) {
    throw ArgumentError(fmt::format("layer '{}': packing weight codes: {}", layer, e.what()));
  }
  out.group_scales = p.scales;
  out.scales.resize(static_cast<std::size_t>(spec.out_channels));
  for (int64_t oc = 0; oc < spec.out_channels; ++oc)
    out.scales[static_cast<std::size_t>(oc)] = p.scales[static_cast<std::size_t>(groups == 1 ? 0 : oc)];
  return out;
}

// ---- The compiler -------------------------------------------------------------------------

// A conv/linear whose op is not emitted yet: whether it requantizes depends on its consumer.
struct PendingMatmul {
  runtime::OpKind kind = runtime::OpKind::conv2d;
  std::string name;
  int32_t input = 0;
  kernels::PackedWeights weights;
  kernels::Conv2dParams conv{};
  std::vector<float> scale, bias;
  bool relu = false;
  runtime::LayerNotes notes;
};

class Compiler {
 public:
  Compiler(const Shape& image_shape, const CompileOptions& options, CompileReport* report)
      : builder_(make_info(image_shape, options)), normalize_(!options.mean.empty()), report_(report) {}

  runtime::Model run(nn::Module& model) {
    if (auto* graph = dynamic_cast<nn::GraphModel*>(&model)) walk_graph(*graph);
    else walk(model);
    const int32_t out = materialize();
    const runtime::ValueInfo& v = builder_.value(out);
    if (v.kind != ValueKind::real || v.shape.size() != 1)
      throw ArgumentError(fmt::format("model: ends in {} {}; the runtime expects logits from a final linear layer",
                                      runtime::value_kind_name(v.kind), runtime::shape_text(v.shape)));
    return builder_.finish(out);
  }

 private:
  static runtime::ModelInfo make_info(const Shape& image_shape, const CompileOptions& o) {
    runtime::ModelInfo info;
    info.architecture = o.architecture;
    info.name = o.name.empty() ? o.architecture : o.name;
    info.input_shape = image_shape;
    info.mean = o.mean;
    info.stddev = o.stddev;
    info.class_names = o.class_names;
    info.extra = o.extra;
    return info;
  }

  void note(std::string text) {
    if (report_ != nullptr) report_->notes.push_back(std::move(text));
  }

  // ---- Values.

  // The current activation as a real value (emitting a pending conv with float output).
  int32_t materialize() {
    if (pending_) {
      PendingMatmul p = std::move(*pending_);
      pending_.reset();
      runtime::ConvParams c;
      c.weights = std::move(p.weights);
      c.conv = p.conv;
      c.epilogue = kernels::Epilogue::float_output(std::move(p.scale), std::move(p.bias), p.relu);
      current_ = p.kind == runtime::OpKind::conv2d ? builder_.conv2d(p.name, p.input, std::move(c), std::move(p.notes))
                                                   : builder_.linear(p.name, p.input, std::move(c), std::move(p.notes));
    }
    return current_;
  }

  // The current activation packed for a layer with input quantizer `q` and padding `border`.
  int32_t packed_input(const nn::QuantizerTransform& q, const ActivationExport& a, int border, const std::string& layer,
                       bool flatten_to_vector) {
    const bool full_range = a.min_code == 0 && a.max_code == a.quant.max_code();
    // A linear layer reading a convolution's spatial output needs a flatten in between, so
    // that convolution writes floats; otherwise fuse: the pending layer's epilogue writes this
    // layer's codes directly.
    const bool needs_flatten = flatten_to_vector && pending_ && pending_->kind == runtime::OpKind::conv2d;
    if (pending_ && full_range && !needs_flatten) {
      PendingMatmul p = std::move(*pending_);
      pending_.reset();
      runtime::ConvParams c;
      c.weights = std::move(p.weights);
      c.conv = p.conv;
      c.epilogue = kernels::Epilogue::requantize(std::move(p.scale), std::move(p.bias), p.relu, a.quant, border);
      return p.kind == runtime::OpKind::conv2d ? builder_.conv2d(p.name, p.input, std::move(c), std::move(p.notes))
                                               : builder_.linear(p.name, p.input, std::move(c), std::move(p.notes));
    }
    int32_t x = materialize();
    const runtime::ValueInfo& v = builder_.value(x);
    if (flatten_to_vector && v.shape.size() == 3 && (v.shape[1] != 1 || v.shape[2] != 1))
      x = builder_.flatten(layer + ".flatten", x);
    const auto key = std::make_tuple(x, a.quant.bits, std::bit_cast<uint32_t>(a.quant.scale), a.quant.zero_point,
                                     a.quant.reciprocal, a.min_code, a.max_code);
    if (auto it = cache_.find(key); it != cache_.end() && builder_.value(it->second).border >= border) return it->second;
    runtime::QuantizeParams qp;
    qp.quant = a.quant;
    qp.border = border;
    qp.normalize = x == builder_.input() && normalize_;
    qp.min_code = a.min_code;
    qp.max_code = a.max_code;
    runtime::LayerNotes n;
    n.input_quantizer = std::string(quant::to_string(q.spec().kind));
    n.input_bits = q.spec().bits;
    n.input_scale = a.scale;
    const int32_t packed = builder_.quantize(layer + ".input", x, qp, std::move(n));
    cache_[key] = packed;
    return packed;
  }

  // ---- Layers.

  // Folds `bn` (if any) into the epilogue of conv/linear `layer`; the op is left pending.
  void matmul_layer(nn::Module& layer, nn::BatchNorm2d* bn, bool relu, int border_hint) {
    const std::string name = layer.name().empty() ? layer.kind() : layer.name();
    auto* conv = dynamic_cast<nn::Conv2d*>(&layer);
    auto* linear = dynamic_cast<nn::Linear*>(&layer);
    nn::TransformSlots& slots = conv != nullptr ? static_cast<nn::TransformSlots&>(*conv) : *linear;
    nn::QuantizerTransform& wq = quantizer_of(slots.weight_transform(), name, "weight");
    nn::QuantizerTransform& aq = quantizer_of(slots.input_transform(), name, "input");

    kernels::WeightSpec spec;
    kernels::Conv2dParams params{};
    int border = 0;
    if (conv != nullptr) {
      const nn::Conv2dOptions& o = conv->options();
      if (o.groups != 1 && !(o.groups == o.in_channels && o.out_channels % o.in_channels == 0))
        throw ArgumentError(fmt::format("layer '{}': groups = {}; the runtime runs dense (1) and depthwise ({}) "
                                        "convolutions",
                                        name, o.groups, o.in_channels));
      spec = {o.out_channels, o.in_channels, o.kernel_h, o.kernel_w, 1, kernels::WeightEncoding::twos_complement,
              o.groups != 1};
      params = {static_cast<int>(o.stride_h), static_cast<int>(o.stride_w), static_cast<int>(o.pad_h),
                static_cast<int>(o.pad_w)};
      border = static_cast<int>(std::max(o.pad_h, o.pad_w));
    } else {
      spec = {linear->out_features(), linear->in_features(), 1, 1, 1, kernels::WeightEncoding::twos_complement, false};
    }
    border = std::max(border, border_hint);
    const ActivationExport a = export_activation(aq, name);
    if (a.note) note(*a.note);
    const int32_t input = packed_input(aq, a, border, name, linear != nullptr);
    const Tensor& weight = conv != nullptr ? conv->weight().value : linear->weight().value;
    WeightExport w = export_weights(wq, weight, spec, name);
    const Parameter* bias = conv != nullptr ? conv->bias() : linear->bias();

    const auto channels = static_cast<std::size_t>(spec.out_channels);
    PendingMatmul p;
    p.kind = conv != nullptr ? runtime::OpKind::conv2d : runtime::OpKind::linear;
    p.name = name;
    p.input = input;
    p.conv = params;
    p.relu = relu;
    p.scale.resize(channels);
    p.bias.resize(channels);
    for (std::size_t oc = 0; oc < channels; ++oc) {
      // The fake-quant layer computes s_a * s_w * acc (+ bias), then BatchNorm's affine map
      // with the float constants nn's evaluation forward uses; the product of the scales is
      // rounded once.
      const double sa_sw = static_cast<double>(a.scale) * static_cast<double>(w.scales[oc]);
      const double b = bias != nullptr ? static_cast<double>(bias->value[static_cast<int64_t>(oc)]) : 0.0;
      if (bn != nullptr) {
        const auto c = static_cast<int64_t>(oc);
        const float eps = bn->options().eps;
        const float bn_scale = bn->weight().value[c] / std::sqrt(bn->running_var().value[c] + eps);
        const float bn_shift = bn->bias().value[c] - bn->running_mean().value[c] * bn_scale;
        p.scale[oc] = static_cast<float>(sa_sw * static_cast<double>(bn_scale));
        p.bias[oc] = bias != nullptr ? static_cast<float>(b * static_cast<double>(bn_scale) +
                                                          static_cast<double>(bn_shift))
                                     : bn_shift;
      } else {
        p.scale[oc] = static_cast<float>(sa_sw);
        p.bias[oc] = static_cast<float>(b);
      }
      if (!std::isfinite(p.scale[oc]) || !std::isfinite(p.bias[oc]))
        throw ArgumentError(fmt::format("layer '{}': output channel {}: folded scale {} / bias {} are not finite "
                                        "(BatchNorm running_var + eps <= 0?)",
                                        name, oc, p.scale[oc], p.bias[oc]));
    }
    p.weights = std::move(w.weights);
    p.notes.weight_quantizer = std::string(quant::to_string(wq.spec().kind));
    p.notes.input_quantizer = std::string(quant::to_string(aq.spec().kind));
    p.notes.weight_bits = wq.spec().bits;
    p.notes.input_bits = aq.spec().bits;
    p.notes.weight_scales = std::move(w.group_scales);
    p.notes.input_scale = a.scale;
    pending_ = std::move(p);
  }

  void block(nn::BasicBlock& blk) {
    const std::string name = blk.name();
    const int32_t x = materialize();
    current_ = x;
    // conv1 reads x with padding 1; a projection shortcut with the same quantizer reads the
    // same packed tensor (padding 0 <= border).
    matmul_layer(blk.conv1(), &blk.bn1(), blk.bn1().fused_relu(), 0);
    matmul_layer(blk.conv2(), &blk.bn2(), false, 0);
    const int32_t branch = materialize();
    runtime::AddParams add;
    add.relu = blk.bn2().fused_relu();
    int32_t shortcut = x;
    switch (blk.shortcut()) {
      case nn::BasicBlock::Shortcut::identity:
        break;
      case nn::BasicBlock::Shortcut::subsample_pad:
        add.shortcut = runtime::ShortcutKind::subsample_pad;
        add.stride = static_cast<int>(blk.stride());
        add.channel_offset = (blk.out_channels() - blk.in_channels()) / 2;
        break;
      case nn::BasicBlock::Shortcut::projection:
        current_ = x;
        matmul_layer(*blk.projection_conv(), blk.projection_bn(), false, 0);
        shortcut = materialize();
        break;
    }
    current_ = builder_.add(name + ".add", branch, shortcut, add);
  }

  void walk(nn::Module& m) {
    if (auto* blk = dynamic_cast<nn::BasicBlock*>(&m)) {
      block(*blk);
      return;
    }
    if (dynamic_cast<nn::Sequential*>(&m) == nullptr)
      throw ArgumentError(fmt::format("layer '{}' ({}): the integer runtime has no op for it (it runs Conv2d, Linear, "
                                      "BatchNorm2d after them, ReLU, MaxPool2d, GlobalAvgPool2d, Flatten, ResNet "
                                      "blocks and Sequential containers of these)",
                                      m.display_name(), m.kind()));
    const auto& children = m.children();
    for (std::size_t i = 0; i < children.size(); ++i) {
      nn::Module& child = *children[i].second;
      auto next = [&](std::size_t k) -> nn::Module* {
        return i + k < children.size() ? children[i + k].second.get() : nullptr;
      };
      if (dynamic_cast<nn::Conv2d*>(&child) != nullptr || dynamic_cast<nn::Linear*>(&child) != nullptr) {
        nn::BatchNorm2d* bn = dynamic_cast<nn::BatchNorm2d*>(next(1));
        if (bn != nullptr && dynamic_cast<nn::Linear*>(&child) != nullptr) bn = nullptr;
        bool relu = bn != nullptr && bn->fused_relu();
        std::size_t skip = bn != nullptr ? 1 : 0;
        if (dynamic_cast<nn::ReLU*>(next(skip + 1)) != nullptr) {
          relu = true;
          ++skip;
        }
        matmul_layer(child, bn, relu, 0);
        i += skip;
      } else if (dynamic_cast<nn::GlobalAvgPool2d*>(&child) != nullptr) {
        current_ = builder_.global_avg_pool(child.name(), materialize());
      } else if (auto* pool = dynamic_cast<nn::MaxPool2d*>(&child)) {
        const nn::Pool2dOptions& o = pool->options();
        if (o.kernel_h != o.kernel_w || o.stride_h != o.stride_w || o.pad_h != o.pad_w)
          throw ArgumentError(fmt::format("layer '{}': the runtime's max pooling takes square windows", child.name()));
        current_ = builder_.max_pool(child.name(), materialize(),
                                     runtime::PoolParams{static_cast<int>(o.kernel_h), static_cast<int>(o.stride_h),
                                                         static_cast<int>(o.pad_h)});
      } else if (dynamic_cast<nn::Flatten*>(&child) != nullptr) {
        const int32_t x = materialize();
        const runtime::ValueInfo& v = builder_.value(x);
        if (v.shape.size() == 3 && (v.shape[1] != 1 || v.shape[2] != 1)) current_ = builder_.flatten(child.name(), x);
      } else if (dynamic_cast<nn::ReLU*>(&child) != nullptr) {
        throw ArgumentError(fmt::format("layer '{}': a ReLU that does not follow a conv or BatchNorm has no runtime op",
                                        child.name()));
      } else if (dynamic_cast<nn::BatchNorm2d*>(&child) != nullptr) {
        throw ArgumentError(fmt::format("layer '{}': a BatchNorm that does not follow a conv cannot be folded",
                                        child.name()));
      } else {
        walk(child);
      }
    }
  }

  // A graph model (nn/graph.hpp): the nodes in order, each tensor's runtime value by name. A
  // conv or linear absorbs a BatchNorm and a ReLU that are the only readers of its output, and
  // its op stays pending until its consumer is known (as in walk()), so a conv feeding only the
  // next conv writes that conv's codes directly.
  void walk_graph(nn::GraphModel& g) {
    const nn::GraphSpec& spec = g.spec();
    std::map<std::string, int32_t> values = {{spec.input, builder_.input()}};
    std::string pending_tensor;
    std::vector<char> absorbed(spec.nodes.size(), 0);
    auto flush = [&] {
      if (pending_) values[pending_tensor] = materialize();
    };
    auto value_of = [&](const std::string& t) {
      if (pending_ && t == pending_tensor) flush();
      return values.at(t);
    };
    // The node that is the only reader of `t`, or -1.
    auto sole_reader = [&](const std::string& t) -> int {
      if (t == spec.output || g.readers_of(t) != 1) return -1;
      for (std::size_t j = 0; j < spec.nodes.size(); ++j)
        if (std::find(spec.nodes[j].inputs.begin(), spec.nodes[j].inputs.end(), t) != spec.nodes[j].inputs.end())
          return static_cast<int>(j);
      return -1;
    };
    for (std::size_t i = 0; i < spec.nodes.size(); ++i) {
      if (absorbed[i]) continue;
      const nn::GraphNode& n = spec.nodes[i];
      nn::Module* m = g.node_module(i);
      const std::string name = m != nullptr ? m->name() : n.name;
      switch (n.op) {
        case nn::GraphOp::conv:
        case nn::GraphOp::linear: {
          const std::string& in = n.inputs[0];
          if (!(pending_ && in == pending_tensor && g.readers_of(in) == 1)) {
            flush();
            current_ = values.at(in);
          }
          std::string out = n.output;
          nn::BatchNorm2d* bn = nullptr;
          bool relu = false;
          if (const int j = sole_reader(out); n.op == nn::GraphOp::conv && j >= 0 &&
                                                spec.nodes[static_cast<std::size_t>(j)].op == nn::GraphOp::batch_norm) {
            bn = dynamic_cast<nn::BatchNorm2d*>(g.node_module(static_cast<std::size_t>(j)));
            relu = bn->fused_relu();
            absorbed[static_cast<std::size_t>(j)] = 1;
            out = spec.nodes[static_cast<std::size_t>(j)].output;
          }
          if (const int j = sole_reader(out); !relu && j >= 0 && spec.nodes[static_cast<std::size_t>(j)].op == nn::GraphOp::relu) {
            relu = true;
            absorbed[static_cast<std::size_t>(j)] = 1;
            out = spec.nodes[static_cast<std::size_t>(j)].output;
          }
          matmul_layer(*m, bn, relu, 0);
          pending_tensor = out;
          break;
        }
        case nn::GraphOp::add: {
          const int32_t a = value_of(n.inputs[0]);
          const int32_t b = value_of(n.inputs[1]);
          runtime::AddParams p;
          p.relu = false;
          std::string out = n.output;
          if (const int j = sole_reader(out); j >= 0 && spec.nodes[static_cast<std::size_t>(j)].op == nn::GraphOp::relu) {
            p.relu = true;
            absorbed[static_cast<std::size_t>(j)] = 1;
            out = spec.nodes[static_cast<std::size_t>(j)].output;
          }
          values[out] = builder_.add(name, a, b, p);
          break;
        }
        case nn::GraphOp::global_avg_pool:
          values[n.output] = builder_.global_avg_pool(name, value_of(n.inputs[0]));
          break;
        case nn::GraphOp::max_pool: {
          const nn::Pool2dOptions& o = n.pool;
          if (o.kernel_h != o.kernel_w || o.stride_h != o.stride_w || o.pad_h != o.pad_w)
            throw ArgumentError(fmt::format("layer '{}': the runtime's max pooling takes square windows", name));
          values[n.output] = builder_.max_pool(name, value_of(n.inputs[0]),
                                               runtime::PoolParams{static_cast<int>(o.kernel_h),
                                                                   static_cast<int>(o.stride_h), static_cast<int>(o.pad_h)});
          break;
        }
        case nn::GraphOp::flatten: {
          const int32_t x = value_of(n.inputs[0]);
          const runtime::ValueInfo& v = builder_.value(x);
          values[n.output] = v.shape.size() == 3 && (v.shape[1] != 1 || v.shape[2] != 1) ? builder_.flatten(name, x) : x;
          break;
        }
        default:
          throw ArgumentError(fmt::format("graph node '{}' ({}): the integer runtime has no op for it (graph models "
                                          "deploy conv, linear, batch_norm and relu after them, add, max_pool, "
                                          "global_avg_pool and flatten; not relu6, avg_pool, concat, or a batch_norm "
                                          "or relu that does not follow a conv)",
                                          name, nn::graph_op_name(n.op)));
      }
    }
    if (pending_ && pending_tensor == spec.output) {
      current_ = materialize();
    } else {
      flush();
      current_ = values.at(spec.output);
    }
  }

  runtime::ModelBuilder builder_;
  bool normalize_ = false;
  CompileReport* report_ = nullptr;
  int32_t current_ = 0;
  std::optional<PendingMatmul> pending_;
  std::map<std::tuple<int32_t, int, uint32_t, int32_t, bool, int32_t, int32_t>, int32_t> cache_;
};

}  // namespace

runtime::Model compile(nn::Module& model, const Shape& image_shape, const CompileOptions& options,
                       CompileReport* report) {
  if (image_shape.size() != 3)
    throw ShapeError(fmt::format("deploy::compile: image shape {} must be [C, H, W]", shape_to_string(image_shape)));
  model.output_shape({1, image_shape[0], image_shape[1], image_shape[2]});  // validates the graph for the input
  Compiler compiler(image_shape, options, report);
  return compiler.run(model);
}

}  // namespace bitmix::deploy
