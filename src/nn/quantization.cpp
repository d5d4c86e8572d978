#include "bitmix/nn/quantization.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "bitmix/core/error.hpp"
#include "bitmix/data/loader.hpp"
#include "bitmix/nn/layers.hpp"

namespace bitmix::nn {
namespace {

using quant::BitConfig;
using quant::LayerBits;
using quant::QuantizerKind;

constexpr const char* kWeightSlot = "weight_transform";
constexpr const char* kInputSlot = "input_transform";

TransformSlots* slots_of(Module* module) { return dynamic_cast<TransformSlots*>(module); }

TransformSlots& slots_of(const LayerInfo& info) {
  if (info.conv != nullptr) return *info.conv;
  return *info.linear;
}

const Parameter& weight_of(const LayerInfo& info) {
  return info.conv != nullptr ? info.conv->weight() : info.linear->weight();
}

// "layer1.0.conv1.weight_transform" ("weight_transform" for a root layer): the prefix of the
// transform's entries in named_parameters() / checkpoints.
std::string slot_path(const Module& layer, const char* slot) {
  return layer.name().empty() ? std::string(slot) : layer.name() + "." + slot;
}

const Parameter& layer_weight(Module& layer) {
  if (auto* conv = dynamic_cast<Conv2d*>(&layer)) return conv->weight();
  return dynamic_cast<Linear&>(layer).weight();
}

std::string entry_label(std::size_t index, std::string_view name) { return fmt::format("layers[{}] \"{}\"", index, name); }

// A quantizer attached to some layer, found by walking the module tree (no input shape needed).
struct AttachedQuantizer {
  std::string path;  // "layer1.0.conv1.input_transform"
  Module* layer;
  QuantizerTransform* transform;
  bool is_weight;
};

std::vector<AttachedQuantizer> all_quantizers(Module& model) {
  std::vector<AttachedQuantizer> out;
  for (Module* m : model.modules()) {
    TransformSlots* s = slots_of(m);
    if (s == nullptr) continue;
    if (auto* w = dynamic_cast<QuantizerTransform*>(s->weight_transform())) out.push_back({slot_path(*m, kWeightSlot), m, w, true});
    if (auto* x = dynamic_cast<QuantizerTransform*>(s->input_transform())) out.push_back({slot_path(*m, kInputSlot), m, x, false});
  }
  return out;
}

bool is_float(QuantizerKind kind) { return kind == QuantizerKind::float_bypass; }

// The activation kinds that can read a signed input, for messages.
constexpr const char* kSignedActivationKinds = "lsq (2-8 bits), uniform or symmetric";

}  // namespace

// ---------------------------------------------------------------------------------------------
// QuantizerTransform.

QuantizerTransform::QuantizerTransform(const quant::QuantizerSpec& spec) : quantizer_(spec) {}

QuantizerTransform::QuantizerTransform(quant::Quantizer quantizer) : quantizer_(std::move(quantizer)) {}

std::string QuantizerTransform::kind() const { return std::string(quant::to_string(quantizer_.kind())); }

const Tensor& QuantizerTransform::forward(const Tensor& x) {
  if (calibrator_) calibrator_->observe(x);
  if (bypassed()) return x;
  quantizer_.forward(x, output_);
  return output_;
}

const Tensor& QuantizerTransform::backward(const Tensor& x, const Tensor& grad_output) {
  if (bypassed()) return grad_output;
  quantizer_.backward(x, grad_output, grad_input_);
  return grad_input_;
}

std::vector<Parameter*> QuantizerTransform::parameters() { return quantizer_.parameters(); }
std::vector<Buffer*> QuantizerTransform::buffers() { return quantizer_.buffers(); }

void QuantizerTransform::set_training(bool training) {
  TensorTransform::set_training(training);
  quantizer_.set_training(training);
}

void QuantizerTransform::begin_observation(const quant::CalibrationOptions& options) {
  if (!quantizer_.accepts_range())
    throw ArgumentError(fmt::format("{}: cannot be calibrated: {} derives its scale itself (calibration applies to "
                                    "uniform, symmetric, pact and lsq quantizers)",
                                    quantizer_.describe(), kind()));
  calibrator_ = std::make_unique<quant::Calibrator>(options, quantizer_);
}

void QuantizerTransform::end_observation() {
  if (!calibrator_) throw Error(fmt::format("{}: end_observation without begin_observation", quantizer_.describe()));
  std::unique_ptr<quant::Calibrator> calibrator = std::move(calibrator_);
  calibrator->apply(quantizer_);
}

// ---------------------------------------------------------------------------------------------
// Bit configurations.

std::vector<std::string> quantizable_layer_names(const Module& model, const Shape& image_shape) {
  std::vector<std::string> names;
  for (const LayerInfo& info : model.quantizable_layers(image_shape)) names.push_back(info.name);
  return names;
}

void annotate_bit_config(BitConfig& config, const Module& model, const Shape& image_shape) {
  const std::vector<LayerInfo> layers = model.quantizable_layers(image_shape);
  for (LayerBits& entry : config.layers) {
    const auto it = std::find_if(layers.begin(), layers.end(), [&](const LayerInfo& l) { return l.name == entry.name; });
    if (it == layers.end()) continue;
    entry.macs = it->macs_per_image;
    entry.params = it->weight_count;
  }
  config.totals = config.compute_totals();
}

quant::BitTotals bit_config_totals(const BitConfig& config, const Module& model, const Shape& image_shape) {
  BitConfig annotated = config;
  annotate_bit_config(annotated, model, image_shape);
  for (const LayerBits& entry : annotated.layers)
    if (!entry.macs || !entry.params)
      throw ArgumentError(fmt::format("BitConfig for model '{}': \"{}\" is not a layer of the model, so its cost is "
                                      "unknown",
                                      config.model, entry.name));
  return *annotated.totals;
}

quant::BitConfig uniform_bit_config(const Module& model, const Shape& image_shape, std::string model_name,
                                    const UniformBits& bits) {
  const std::vector<std::string> names = quantizable_layer_names(model, image_shape);
  if (names.empty()) throw ArgumentError(fmt::format("model '{}' has no quantizable layer (Conv2d or Linear)", model_name));
  // Validates bits and kinds (the message names the first layer and the value at fault).
  BitConfig config = BitConfig::uniform(std::move(model_name), names, bits.w_bits, bits.a_bits, bits.w_quant,
                                        bits.a_quant, quant::BitPolicy::none());
  for (LayerBits& layer : config.layers) {
    layer.w_granularity = bits.w_granularity;
    layer.w_block = bits.w_block;
  }

  // A quantizer the layer cannot take with this kind falls back to LSQ (the kinds take every
  // bitwidth 1..8, and signed inputs from 2 bits).
  const auto fit = [](LayerBits& layer, bool signed_input) {
    if (is_float(layer.w_quant) != (layer.w_bits == quant::kFloatBits))
      layer.w_quant = layer.w_bits == quant::kFloatBits ? QuantizerKind::float_bypass : QuantizerKind::lsq;
    if (is_float(layer.a_quant) != (layer.a_bits == quant::kFloatBits))
      layer.a_quant = layer.a_bits == quant::kFloatBits ? QuantizerKind::float_bypass : QuantizerKind::lsq;
    if (!quant::check(layer.weight_spec()).empty()) layer.w_quant = QuantizerKind::lsq;
    if (!quant::check(layer.activation_spec(signed_input)).empty()) layer.a_quant = QuantizerKind::lsq;
  };
  config.policy = bits.policy;
  const auto pin = [&](LayerBits& layer, const std::optional<int>& pinned, std::string_view which) {
    if (!pinned) return;
    if (!((*pinned >= quant::kMinBits && *pinned <= quant::kMaxBits) || *pinned == quant::kFloatBits))
      throw ArgumentError(fmt::format("policy: {} layer bits = {}: expected an integer from {} to {} (or {} for float)",
                                      which, *pinned, quant::kMinBits, quant::kMaxBits, quant::kFloatBits));
    layer.w_bits = layer.a_bits = *pinned;
  };
  pin(config.layers.front(), bits.policy.first_layer_bits, "first");
  pin(config.layers.back(), bits.policy.last_layer_bits, "last");
  for (std::size_t i = 0; i < config.layers.size(); ++i) fit(config.layers[i], i == 0);
  annotate_bit_config(config, model, image_shape);
  validate_bit_config(config, model, image_shape);
  return config;
}

void validate_bit_config(const BitConfig& config, const Module& model, const Shape& image_shape,
                         const QuantizationOptions& options) {
  const std::vector<std::string> names = quantizable_layer_names(model, image_shape);
  config.validate_for_model(names);
  if (options.signed_first_input) {
    const LayerBits& first = config.layers.front();
    if (std::string m = quant::check(first.activation_spec(/*signed_activations=*/true)); !m.empty())
      throw ArgumentError(fmt::format("BitConfig for model '{}': {}: a_quant = \"{}\", a_bits = {}: this layer reads "
                                      "the model input, which is signed (a normalized image), and {} ({}); for it use "
                                      "{}",
                                      config.model, entry_label(0, first.name), quant::to_string(first.a_quant),
                                      first.a_bits, quant::to_string(first.a_quant), m, kSignedActivationKinds));
  }
}

void apply_bit_config(Module& model, const Shape& image_shape, const BitConfig& config,
                      const QuantizationOptions& options) {
  validate_bit_config(config, model, image_shape, options);
  const std::vector<LayerInfo> layers = model.quantizable_layers(image_shape);
  // Build everything first, so that an error leaves the model as it was.
  struct Pending {
    TransformSlots* slots;
    bool training;
    std::unique_ptr<QuantizerTransform> weight, input;
  };
  std::vector<Pending> pending;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerInfo& info = layers[i];
    const LayerBits& entry = config.at(info.name);
    Pending p{&slots_of(info), info.module->training(), nullptr, nullptr};
    try {
      const Shape& w_shape = weight_of(info).value.shape();
      if (entry.w_quant == QuantizerKind::dsconv && w_shape.size() >= 2 && w_shape[1] > entry.w_block &&
          w_shape[1] % entry.w_block != 0)
        throw ArgumentError(fmt::format("w_block = {}: DSConv blocks split the {} input channels of weight {} "
                                        "evenly; use a block size that divides them or one of at least {}",
                                        entry.w_block, w_shape[1], shape_to_string(w_shape), w_shape[1]));
      if (!is_float(entry.w_quant)) {
        quant::QuantizerSpec w_spec = entry.weight_spec(w_shape[0]);
        w_spec.numel = shape_numel(w_shape);  // INQ's per-weight state
        p.weight = std::make_unique<QuantizerTransform>(w_spec);
      }
      if (!is_float(entry.a_quant))
        p.input = std::make_unique<QuantizerTransform>(entry.activation_spec(options.signed_first_input && i == 0));
    } catch (const ArgumentError& e) {
      throw ArgumentError(fmt::format("BitConfig for model '{}': {}: {}", config.model, entry_label(i, entry.name), e.what()));
    }
    pending.push_back(std::move(p));
  }
  for (Pending& p : pending) {
    if (p.weight) p.weight->set_training(p.training);
    if (p.input) p.input->set_training(p.training);
    p.slots->set_weight_transform(std::move(p.weight));
    p.slots->set_input_transform(std::move(p.input));
  }
}

std::vector<LayerQuantizers> attached_quantizers(Module& model, const Shape& image_shape) {
  std::vector<LayerQuantizers> out;
  for (const LayerInfo& info : model.quantizable_layers(image_shape)) {
    TransformSlots& s = slots_of(info);
    out.push_back({info.name, info.module, dynamic_cast<QuantizerTransform*>(s.weight_transform()),
                   dynamic_cast<QuantizerTransform*>(s.input_transform())});
  }
  return out;
}

quant::BitConfig attached_bit_config(Module& model, const Shape& image_shape, std::string model_name,
                                     quant::BitPolicy policy) {
  BitConfig config;
  config.model = std::move(model_name);
  config.policy = policy;
  for (const LayerInfo& info : model.quantizable_layers(image_shape)) {
    TransformSlots& s = slots_of(info);
    LayerBits entry;
    entry.name = info.name;
    const auto read = [&](TensorTransform* t, const char* slot, int& bits, QuantizerKind& kind) -> QuantizerTransform* {
      if (t == nullptr) {
        bits = quant::kFloatBits;
        kind = QuantizerKind::float_bypass;
        return nullptr;
      }
      auto* q = dynamic_cast<QuantizerTransform*>(t);
      if (q == nullptr)
        throw ArgumentError(fmt::format("{}: the {} is a '{}' transform, not a quantizer; a BitConfig describes "
                                        "quantizers only",
                                        info.name, slot, t->kind()));
      bits = q->spec().bits;
      kind = q->spec().kind;
      return q;
    };
    if (QuantizerTransform* w = read(s.weight_transform(), kWeightSlot, entry.w_bits, entry.w_quant))
      entry.w_granularity = w->spec().granularity;
    read(s.input_transform(), kInputSlot, entry.a_bits, entry.a_quant);
    config.layers.push_back(std::move(entry));
  }
  annotate_bit_config(config, model, image_shape);
  return config;
}

void remove_quantizers(Module& model) {
  for (Module* m : model.modules()) {
    if (TransformSlots* s = slots_of(m)) {
      s->set_weight_transform(nullptr);
      s->set_input_transform(nullptr);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

QuantizedLoadReport load_quantized_model_state(Module& model, const Checkpoint& checkpoint, const LoadOptions& options,
                                               std::string_view source) {
  const std::vector<AttachedQuantizer> quantizers = all_quantizers(model);
  std::set<std::string> quantizer_entries;
  for (const AttachedQuantizer& q : quantizers) {
    for (Parameter* p : q.transform->parameters()) quantizer_entries.insert(q.path + "." + p->name);
    for (Buffer* b : q.transform->buffers()) quantizer_entries.insert(q.path + "." + b->name);
  }
  // Everything but quantizer state must be there (checked before anything is copied).
  std::vector<std::string> missing;
  for (const NamedParameter& p : model.named_parameters())
    if (!quantizer_entries.count(p.name) && checkpoint.find(CheckpointTensorKind::parameter, p.name) == nullptr)
      missing.push_back(p.name);
  for (const NamedBuffer& b : model.named_buffers())
    if (!quantizer_entries.count(b.name) && checkpoint.find(CheckpointTensorKind::buffer, b.name) == nullptr)
      missing.push_back(b.name);
  if (!missing.empty()) {
    const std::size_t shown = std::min<std::size_t>(missing.size(), 8);
    std::string list = fmt::format("{}", fmt::join(missing.begin(), missing.begin() + static_cast<std::ptrdiff_t>(shown), ", "));
    if (missing.size() > shown) list += fmt::format(", ... ({} in all)", missing.size());
    throw FormatError(fmt::format("{}: the model has {} entries the checkpoint lacks: {} (only quantizer state may be "
                                  "absent; a different architecture?)",
                                  source, missing.size(), list));
  }

  QuantizedLoadReport report;
  LoadOptions lo;
  lo.allow_missing = true;
  lo.allow_unexpected = options.allow_unexpected;
  report.model = load_model_state(model, checkpoint, lo, source);

  for (const AttachedQuantizer& q : quantizers) {
    const std::vector<Parameter*> params = q.transform->parameters();
    const std::vector<Buffer*> buffers = q.transform->buffers();
    if (params.empty() && buffers.empty()) continue;  // stateless (dorefa, sawb, binary, ...)
    const auto has_param = [&](const Parameter* p) {
      return checkpoint.find(CheckpointTensorKind::parameter, q.path + "." + p->name) != nullptr;
    };
    const auto has_buffer = [&](const Buffer* b) {
      return checkpoint.find(CheckpointTensorKind::buffer, q.path + "." + b->name) != nullptr;
    };
    const bool all_params = std::all_of(params.begin(), params.end(), has_param);
    const bool all_buffers = std::all_of(buffers.begin(), buffers.end(), has_buffer);
    if (all_params && all_buffers) {
      report.restored.push_back(q.path);
      continue;
    }
    // Learnable parameters without their flag: keep them, and say they are set.
    const bool only_flag_missing =
        !params.empty() && all_params &&
        std::all_of(buffers.begin(), buffers.end(), [&](const Buffer* b) { return has_buffer(b) || b->name == "initialized"; });
    if (only_flag_missing) {
      for (Buffer* b : buffers)
        if (b->name == "initialized") b->value.fill(1.0f);
      report.marked_initialized.push_back(q.path);
      continue;
    }
    // Derived from other weights: start again from data.
    for (Buffer* b : buffers)
      if (b->name == "initialized" || b->name == "range_frozen") b->value.fill(0.0f);
    if (q.transform->spec().kind == QuantizerKind::pact)
      for (Parameter* p : params)
        if (p->name == "alpha" && !has_param(p)) p->value.fill(q.transform->spec().pact_initial_alpha);
    report.to_initialize.push_back(q.path);
  }
  return report;
}

// ---------------------------------------------------------------------------------------------
// Calibration.

CalibrationReport calibrate_quantizers(Module& model, std::span<const Tensor> batches,
                                       const QatCalibrationOptions& options) {
  if (batches.empty()) throw ArgumentError("calibrate_quantizers: no calibration batches (expected at least one)");
  const std::vector<AttachedQuantizer> quantizers = all_quantizers(model);
  CalibrationReport report;
  report.batches = static_cast<int64_t>(batches.size());
  const bool was_training = model.training();

  // Restores the model whatever happens.
  struct Restore {
    Module& model;
    const std::vector<AttachedQuantizer>& quantizers;
    bool training;
    ~Restore() {
      for (const AttachedQuantizer& q : quantizers) {
        q.transform->cancel_observation();
        q.transform->set_bypass(false);
      }
      model.train(training);
    }
  } restore{model, quantizers, was_training};

  const auto wanted = [&](const AttachedQuantizer& q) {
    return options.only.empty() || std::find(options.only.begin(), options.only.end(), q.path) != options.only.end();
  };
  model.eval();
  for (const AttachedQuantizer& q : quantizers) {
    q.transform->set_bypass(true);
    if (q.is_weight) continue;
    if (wanted(q) && q.transform->quantizer().accepts_range()) {
      q.transform->begin_observation(options.method);
    }
  }
  for (const Tensor& batch : batches) model.forward(batch);
  for (const AttachedQuantizer& q : quantizers) {
    if (!q.is_weight) {
      if (q.transform->observing()) {
        q.transform->end_observation();
        report.calibrated.push_back(q.path);
      } else {
        report.skipped.push_back(q.path);
      }
      continue;
    }
    if (options.weights && wanted(q) && q.transform->spec().kind == QuantizerKind::lsq) {
      const Parameter& w = layer_weight(*q.layer);
      quant::Calibrator calibrator(options.method, q.transform->quantizer());
      calibrator.observe(w.value);
      calibrator.apply(q.transform->quantizer());
      report.calibrated.push_back(q.path);
    } else {
      report.skipped.push_back(q.path);
    }
  }
  return report;
}

CalibrationReport calibrate_quantizers(Module& model, const data::BatchLoader& loader, int64_t batches,
                                       const QatCalibrationOptions& options) {
  if (batches < 1) throw ArgumentError(fmt::format("calibration batches = {}: expected at least 1", batches));
  const int64_t n = std::min(batches, loader.num_batches());
  std::vector<Tensor> images;
  images.reserve(static_cast<std::size_t>(n));
  for (int64_t b = 0; b < n; ++b) images.push_back(loader.batch(b).images);
  return calibrate_quantizers(model, images, options);
}

// ---------------------------------------------------------------------------------------------
// INQ.

bool has_inq_quantizers(Module& model, const Shape& image_shape) {
  for (const LayerQuantizers& q : attached_quantizers(model, image_shape))
    if (q.weight != nullptr && q.weight->spec().kind == QuantizerKind::inq) return true;
  return false;
}

quant::InqFreezeReport inq_freeze(Module& model, const Shape& image_shape, double fraction) {
  quant::InqFreezeReport total;
  for (const LayerQuantizers& q : attached_quantizers(model, image_shape)) {
    if (q.weight == nullptr || q.weight->spec().kind != QuantizerKind::inq) continue;
    try {
      const quant::InqFreezeReport r = quant::inq_freeze(q.weight->quantizer(), layer_weight(*q.layer).value, fraction);
      total.newly_frozen += r.newly_frozen;
      total.frozen += r.frozen;
      total.total += r.total;
    } catch (const Error& e) {
      throw ArgumentError(fmt::format("layer '{}': {}", q.name, e.what()));
    }
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// --quant names.

const std::vector<std::string>& quant_scheme_names() {
  static const std::vector<std::string> names = {"lsq", "pact", "dorefa", "uniform", "symmetric",
                                                 "sawb", "pot", "binary", "ternary", "syq", "dsconv", "inq"};
  return names;
}

QuantScheme parse_quant_scheme(std::string_view text) {
  const auto fail = [&](const std::string& why) -> ArgumentError {
    return ArgumentError(fmt::format("quantization scheme '{}': {}; expected one of {} or a WEIGHT/ACTIVATION pair of "
                                     "quantizer kinds (e.g. sawb/lsq)",
                                     text, why, fmt::join(quant_scheme_names(), ", ")));
  };
  if (const std::size_t slash = text.find('/'); slash != std::string_view::npos) {
    QuantScheme s;
    try {
      s.w_quant = quant::parse_quantizer_kind(text.substr(0, slash));
      s.a_quant = quant::parse_quantizer_kind(text.substr(slash + 1));
    } catch (const ArgumentError& e) {
      throw fail(e.what());
    }
    if (is_float(s.w_quant) || is_float(s.a_quant)) throw fail("float is not a quantization scheme");
    // Role checks (PACT on weights, SAWB on activations), at a bitwidth each kind takes; the
    // bits themselves are checked when the configuration is built.
    const int w_probe = s.w_quant == QuantizerKind::binary ? 1 : 2;
    const auto w_granularity = s.w_quant == QuantizerKind::dsconv ? quant::Granularity::per_channel : quant::Granularity::per_tensor;
    for (const quant::QuantizerSpec& spec :
         {quant::weight_spec(s.w_quant, w_probe, w_granularity), quant::activation_spec(s.a_quant, 2)})
      if (std::string m = quant::check(spec); !m.empty()) throw fail(m);
    return s;
  }
  if (text == "lsq") return {QuantizerKind::lsq, QuantizerKind::lsq};
  if (text == "pact") return {QuantizerKind::dorefa, QuantizerKind::pact};
  if (text == "dorefa") return {QuantizerKind::dorefa, QuantizerKind::dorefa};
  if (text == "uniform") return {QuantizerKind::uniform, QuantizerKind::uniform};
  if (text == "symmetric") return {QuantizerKind::symmetric, QuantizerKind::symmetric};
  if (text == "sawb") return {QuantizerKind::sawb, QuantizerKind::pact};
  if (text == "pot") return {QuantizerKind::pot, QuantizerKind::lsq};
  if (text == "binary") return {QuantizerKind::binary, QuantizerKind::lsq};
  if (text == "ternary") return {QuantizerKind::ternary, QuantizerKind::lsq};
  if (text == "syq") return {QuantizerKind::syq, QuantizerKind::lsq};
  if (text == "dsconv") return {QuantizerKind::dsconv, QuantizerKind::lsq};
  if (text == "inq") return {QuantizerKind::inq, QuantizerKind::lsq};
  throw fail("unknown name");
}

}  // namespace bitmix::nn
