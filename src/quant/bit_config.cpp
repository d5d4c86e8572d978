#include "bitmix/quant/bit_config.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "core/strict_json.hpp"

namespace bitmix::quant {
namespace {

using Json = nlohmann::ordered_json;

std::string entry_name(std::size_t index, std::string_view name) {
  return fmt::format("layers[{}] \"{}\"", index, name);
}

std::string join(const std::vector<std::string>& items, std::size_t limit) {
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < limit; ++i) {
    if (i > 0) out += ", ";
    out += items[i];
  }
  if (items.size() > limit) out += fmt::format(", ... ({} in all)", items.size());
  return out;
}

// Reading JSON fields with messages that name where the value is.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw FormatError(fmt::format("{}: {}: {}", source_, where, what));
  }

  void expect_keys(const Json& object, const std::string& where, std::initializer_list<std::string_view> accepted) const {
    for (auto it = object.begin(); it != object.end(); ++it) {
      const bool known = std::any_of(accepted.begin(), accepted.end(), [&](std::string_view k) { return k == it.key(); });
      if (!known) {
        std::vector<std::string> names(accepted.begin(), accepted.end());
        fail(where, fmt::format("unknown key \"{}\": expected {}", it.key(), join(names, names.size())));
      }
    }
  }

  const Json& required(const Json& object, const std::string& where, const char* key) const {
    const auto it = object.find(key);
    if (it == object.end()) fail(where, fmt::format("missing \"{}\"", key));
    return *it;
  }

  std::string string(const Json& value, const std::string& where, const char* key) const {
    if (!value.is_string()) fail(where, fmt::format("\"{}\" = {}: expected a string", key, value.dump()));
    return value.get<std::string>();
  }

  int64_t integer(const Json& value, const std::string& where, const char* key, int64_t lo, int64_t hi) const {
    const bool in_range =
        value.is_number_integer() &&
        !(value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) &&
        value.get<int64_t>() >= lo && value.get<int64_t>() <= hi;
    if (!in_range) fail(where, fmt::format("\"{}\" = {}: expected an integer from {} to {}", key, value.dump(), lo, hi));
    return value.get<int64_t>();
  }

  std::optional<int64_t> optional_count(const Json& object, const std::string& where, const char* key) const {
    const auto it = object.find(key);
    if (it == object.end()) return std::nullopt;
    return integer(*it, where, key, 0, std::numeric_limits<int64_t>::max());
  }

 private:
  std::string source_;
};

std::string check_layer(const LayerBits& layer) {
  if (std::string m = check(layer.weight_spec()); !m.empty())
    return fmt::format("w_bits = {}, w_quant = \"{}\": {}", layer.w_bits, to_string(layer.w_quant), m);
  if (std::string m = check(layer.activation_spec()); !m.empty())
    return fmt::format("a_bits = {}, a_quant = \"{}\": {}", layer.a_bits, to_string(layer.a_quant), m);
  if (layer.macs && *layer.macs < 0) return fmt::format("macs = {}: expected a non-negative count", *layer.macs);
  if (layer.params && *layer.params < 0) return fmt::format("params = {}: expected a non-negative count", *layer.params);
  return {};
}

bool valid_pin(int bits) { return (bits >= kMinBits && bits <= kMaxBits) || bits == kFloatBits; }

// Checks that `layer` honours a pin of `bits` (both weights and activations).
std::string check_pin(const LayerBits& layer, int bits, std::string_view which) {
  if (layer.w_bits != bits || layer.a_bits != bits)
    return fmt::format("the policy pins the {} layer at {} bits, but it has w_bits = {}, a_bits = {}", which, bits,
                       layer.w_bits, layer.a_bits);
  return {};
}

}  // namespace

QuantizerSpec LayerBits::weight_spec(int64_t out_channels) const {
  QuantizerSpec spec = quant::weight_spec(w_quant, w_bits, w_granularity, out_channels);
  if (w_granularity == Granularity::per_tensor) spec.channels = 1;
  spec.block_size = w_block;
  return spec;
}

QuantizerSpec LayerBits::activation_spec(bool signed_activations) const {
  return quant::activation_spec(a_quant, a_bits, signed_activations);
}

std::string BitPolicy::describe() const {
  const auto pin = [](std::string_view which, const std::optional<int>& bits) {
    return bits ? fmt::format("{} layer at {} bits", which, *bits) : fmt::format("{} layer not pinned", which);
  };
  if (!first_layer_bits && !last_layer_bits) return "no layer pinned";
  if (first_layer_bits && last_layer_bits && *first_layer_bits == *last_layer_bits)
    return fmt::format("first and last layers at {} bits", *first_layer_bits);
  return pin("first", first_layer_bits) + ", " + pin("last", last_layer_bits);
}

BitConfig BitConfig::uniform(std::string model_name, const std::vector<std::string>& layer_names, int w_bits,
                             int a_bits, QuantizerKind w_quant, QuantizerKind a_quant, BitPolicy pins) {
  BitConfig config;
  config.model = std::move(model_name);
  config.policy = pins;
  for (const std::string& name : layer_names) {
    LayerBits layer;
    layer.name = name;
    layer.w_bits = w_bits;
    layer.a_bits = a_bits;
    layer.w_quant = w_quant;
    layer.a_quant = a_quant;
    if (w_quant == QuantizerKind::dsconv) layer.w_granularity = Granularity::per_channel;  // its only granularity
    config.layers.push_back(std::move(layer));
  }
  config.apply_policy();
  config.validate();
  return config;
}

void BitConfig::apply_policy() {
  if (layers.empty()) return;
  const auto pin = [&](LayerBits& layer, const std::optional<int>& bits, std::string_view which) {
    if (!bits) return;
    if (!valid_pin(*bits))
      throw ArgumentError(fmt::format("policy: {}_layer_bits = {}: expected an integer from {} to {} (or {})", which,
                                      *bits, kMinBits, kMaxBits, kFloatBits));
    LayerBits pinned = layer;
    pinned.w_bits = *bits;
    pinned.a_bits = *bits;
    if (std::string m = check_layer(pinned); !m.empty())
      throw ArgumentError(fmt::format("the policy pins the {} layer \"{}\" at {} bits, which its quantizers cannot "
                                      "take: {}",
                                      which, layer.name, *bits, m));
    layer = pinned;
  };
  pin(layers.front(), policy.first_layer_bits, "first");
  pin(layers.back(), policy.last_layer_bits, "last");
}

void BitConfig::validate() const {
  if (layers.empty()) throw ArgumentError(fmt::format("BitConfig for model '{}': no layers", model));
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerBits& layer = layers[i];
    if (layer.name.empty()) throw ArgumentError(fmt::format("layers[{}]: empty layer name", i));
    if (!seen.insert(layer.name).second)
      throw ArgumentError(fmt::format("{}: duplicate layer name", entry_name(i, layer.name)));
    if (std::string m = check_layer(layer); !m.empty())
      throw ArgumentError(fmt::format("{}: {}", entry_name(i, layer.name), m));
  }
  const auto check_policy = [&](const std::optional<int>& bits, std::size_t index, std::string_view which) {
    if (!bits) return;
    if (!valid_pin(*bits))
      throw ArgumentError(fmt::format("policy: {}_layer_bits = {}: expected an integer from {} to {} (or {})", which,
                                      *bits, kMinBits, kMaxBits, kFloatBits));
    if (std::string m = check_pin(layers[index], *bits, which); !m.empty())
      throw ArgumentError(fmt::format("{}: {}", entry_name(index, layers[index].name), m));
  };
  check_policy(policy.first_layer_bits, 0, "first");
  check_policy(policy.last_layer_bits, layers.size() - 1, "last");
  if (totals) {
    for (const std::optional<int64_t>* v : {&totals->macs, &totals->params, &totals->bitops, &totals->weight_bits})
      if (*v && **v < 0) throw ArgumentError(fmt::format("totals: negative count {}", **v));
  }
}

void BitConfig::validate_for_model(std::span<const std::string> model_layer_names) const {
  validate();
  const std::set<std::string_view> in_model(model_layer_names.begin(), model_layer_names.end());
  std::vector<std::string> unknown, missing;
  for (const LayerBits& layer : layers)
    if (!in_model.count(layer.name)) unknown.push_back("\"" + layer.name + "\"");
  for (const std::string& name : model_layer_names)
    if (!find(name)) missing.push_back("\"" + name + "\"");
  const std::string model_list = join(std::vector<std::string>(model_layer_names.begin(), model_layer_names.end()), 6);
  if (!unknown.empty())
    throw ArgumentError(fmt::format("BitConfig for model '{}': {} {} not a layer of the model (its layers: {})", model,
                                    join(unknown, 6), unknown.size() == 1 ? "is" : "are", model_list));
  if (!missing.empty())
    throw ArgumentError(fmt::format("BitConfig for model '{}': no entry for the model's layer{} {}", model,
                                    missing.size() == 1 ? "" : "s", join(missing, 6)));
  for (std::size_t i = 0; i < layers.size(); ++i)
    if (layers[i].name != model_layer_names[i])
      throw ArgumentError(fmt::format("BitConfig for model '{}': {} is listed where the model has \"{}\"; layers must "
                                      "be listed in the model's order (the policy pins the first and last)",
                                      model, entry_name(i, layers[i].name), model_layer_names[i]));
}

const LayerBits* BitConfig::find(std::string_view name) const noexcept {
  for (const LayerBits& layer : layers)
    if (layer.name == name) return &layer;
  return nullptr;
}

LayerBits* BitConfig::find(std::string_view name) noexcept {
  for (LayerBits& layer : layers)
    if (layer.name == name) return &layer;
  return nullptr;
}

const LayerBits& BitConfig::at(std::string_view name) const {
  if (const LayerBits* layer = find(name)) return *layer;
  std::vector<std::string> names;
  for (const LayerBits& layer : layers) names.push_back("\"" + layer.name + "\"");
  throw ArgumentError(
      fmt::format("BitConfig for model '{}' has no layer \"{}\" (its layers: {})", model, name, join(names, 6)));
}

BitTotals BitConfig::compute_totals() const {
  BitTotals t;
  const bool all_macs = std::all_of(layers.begin(), layers.end(), [](const LayerBits& l) { return l.macs.has_value(); });
  const bool all_params =
      std::all_of(layers.begin(), layers.end(), [](const LayerBits& l) { return l.params.has_value(); });
  if (all_macs) {
    int64_t macs = 0, bitops = 0;
    for (const LayerBits& l : layers) {
      macs += *l.macs;
      bitops += *l.macs * l.w_bits * l.a_bits;
    }
    t.macs = macs;
    t.bitops = bitops;
  }
  if (all_params) {
    int64_t params = 0, weight_bits = 0;
    for (const LayerBits& l : layers) {
      params += *l.params;
      weight_bits += *l.params * code_bits(l.weight_spec());
    }
    t.params = params;
    t.weight_bits = weight_bits;
  }
  return t;
}

std::string BitConfig::summary() const {
  if (layers.empty()) return fmt::format("{}: no layers; policy: {}", model, policy.describe());
  const bool by_params = std::all_of(layers.begin(), layers.end(), [](const LayerBits& l) { return l.params.has_value(); });
  const bool by_macs = std::all_of(layers.begin(), layers.end(), [](const LayerBits& l) { return l.macs.has_value(); });
  // "weights 2-8 bits (mean 3.41 weighted by params)"; float layers count as 32 bits.
  const auto describe_bits = [&](bool weights) {
    int lo = kFloatBits + 1, hi = 0;
    double weighted = 0.0, total = 0.0;
    for (const LayerBits& l : layers) {
      const int b = weights ? l.w_bits : l.a_bits;
      const double w = weights ? (by_params ? static_cast<double>(*l.params) : 1.0)
                               : (by_macs ? static_cast<double>(*l.macs) : 1.0);
      lo = std::min(lo, b);
      hi = std::max(hi, b);
      weighted += w * b;
      total += w;
    }
    const std::string span = lo == hi ? fmt::format("{}", lo) : fmt::format("{}-{}", lo, hi);
    const char* basis = weights ? (by_params ? "weighted by params" : "per layer") : (by_macs ? "weighted by MACs" : "per layer");
    return fmt::format("{} {} bits (mean {:.2f} {})", weights ? "weights" : "activations", span,
                       total > 0.0 ? weighted / total : 0.0, basis);
  };
  return fmt::format("{}: {} layers; {}; {}; policy: {}", model, layers.size(), describe_bits(true),
                     describe_bits(false), policy.describe());
}

std::string BitConfig::to_json() const {
  Json root;
  root["format"] = std::string(kFormat);
  root["version"] = kVersion;
  root["model"] = model;
  Json pins;
  pins["first_layer_bits"] = policy.first_layer_bits ? Json(*policy.first_layer_bits) : Json(nullptr);
  pins["last_layer_bits"] = policy.last_layer_bits ? Json(*policy.last_layer_bits) : Json(nullptr);
  root["policy"] = pins;
  Json list = Json::array();
  for (const LayerBits& l : layers) {
    Json e;
    e["name"] = l.name;
    e["w_bits"] = l.w_bits;
    e["a_bits"] = l.a_bits;
    e["w_quant"] = std::string(to_string(l.w_quant));
    e["a_quant"] = std::string(to_string(l.a_quant));
    e["w_granularity"] = std::string(to_string(l.w_granularity));
    if (l.w_quant == QuantizerKind::dsconv) e["w_block"] = l.w_block;
    if (l.macs) e["macs"] = *l.macs;
    if (l.params) e["params"] = *l.params;
    list.push_back(std::move(e));
  }
  root["layers"] = std::move(list);
  if (totals) {
    Json t = Json::object();
    if (totals->macs) t["macs"] = *totals->macs;
    if (totals->params) t["params"] = *totals->params;
    if (totals->bitops) t["bitops"] = *totals->bitops;
    if (totals->weight_bits) t["weight_bits"] = *totals->weight_bits;
    root["totals"] = std::move(t);
  }
  if (!notes.empty()) root["notes"] = notes;
  return root.dump(2) + "\n";
}

void BitConfig::save(const std::filesystem::path& path) const {
  validate();
  write_file_atomic(path, to_json());
}

BitConfig BitConfig::load(const std::filesystem::path& path) { return parse(read_file_text(path), path.string()); }

BitConfig BitConfig::parse(std::string_view json_text, std::string_view source) {
  const Reader r{std::string(source)};
  const Json root = bitmix::detail::parse_json_strict<Json>(json_text, source);
  if (!root.is_object()) r.fail("top level", "expected a JSON object");
  r.expect_keys(root, "top level", {"format", "version", "model", "policy", "layers", "totals", "notes"});
  const std::string format = r.string(r.required(root, "top level", "format"), "top level", "format");
  if (format != kFormat) r.fail("top level", fmt::format("format \"{}\": expected \"{}\"", format, kFormat));
  const int64_t version = r.integer(r.required(root, "top level", "version"), "top level", "version", 1,
                                    std::numeric_limits<int32_t>::max());
  if (version != kVersion)
    r.fail("top level", fmt::format("version {}: this bitmix reads version {}", version, kVersion));

  BitConfig config;
  config.model = r.string(r.required(root, "top level", "model"), "top level", "model");

  config.policy = BitPolicy::none();  // a file that states no policy pins nothing
  if (const auto it = root.find("policy"); it != root.end()) {
    if (!it->is_object()) r.fail("policy", "expected an object");
    r.expect_keys(*it, "policy", {"first_layer_bits", "last_layer_bits"});
    const auto pin = [&](const char* key) -> std::optional<int> {
      const auto p = it->find(key);
      if (p == it->end() || p->is_null()) return std::nullopt;
      return static_cast<int>(r.integer(*p, "policy", key, kMinBits, kFloatBits));
    };
    config.policy.first_layer_bits = pin("first_layer_bits");
    config.policy.last_layer_bits = pin("last_layer_bits");
  }

  const Json& list = r.required(root, "top level", "layers");
  if (!list.is_array()) r.fail("top level", "\"layers\": expected an array of layer entries");
  for (std::size_t i = 0; i < list.size(); ++i) {
    const Json& e = list[i];
    std::string where = fmt::format("layers[{}]", i);
    if (!e.is_object()) r.fail(where, "expected an object");
    LayerBits layer;
    layer.name = r.string(r.required(e, where, "name"), where, "name");
    where = entry_name(i, layer.name);
    r.expect_keys(e, where, {"name", "w_bits", "a_bits", "w_quant", "a_quant", "w_granularity", "w_block", "macs", "params"});
    layer.w_bits = static_cast<int>(r.integer(r.required(e, where, "w_bits"), where, "w_bits", kMinBits, kFloatBits));
    layer.a_bits = static_cast<int>(r.integer(r.required(e, where, "a_bits"), where, "a_bits", kMinBits, kFloatBits));
    try {
      layer.w_quant = parse_quantizer_kind(r.string(r.required(e, where, "w_quant"), where, "w_quant"));
      layer.a_quant = parse_quantizer_kind(r.string(r.required(e, where, "a_quant"), where, "a_quant"));
      if (const auto g = e.find("w_granularity"); g != e.end())
        layer.w_granularity = parse_granularity(r.string(*g, where, "w_granularity"));
    } catch (const ArgumentError& error) {
      r.fail(where, error.what());
    }
    if (const auto b = e.find("w_block"); b != e.end())
      layer.w_block = r.integer(*b, where, "w_block", 1, int64_t{1} << 20);
    layer.macs = r.optional_count(e, where, "macs");
    layer.params = r.optional_count(e, where, "params");
    config.layers.push_back(std::move(layer));
  }

  if (const auto it = root.find("totals"); it != root.end()) {
    if (!it->is_object()) r.fail("totals", "expected an object");
    r.expect_keys(*it, "totals", {"macs", "params", "bitops", "weight_bits"});
    BitTotals t;
    t.macs = r.optional_count(*it, "totals", "macs");
    t.params = r.optional_count(*it, "totals", "params");
    t.bitops = r.optional_count(*it, "totals", "bitops");
    t.weight_bits = r.optional_count(*it, "totals", "weight_bits");
    config.totals = t;
  }
  if (const auto it = root.find("notes"); it != root.end()) config.notes = r.string(*it, "top level", "notes");

  try {
    config.validate();
  } catch (const ArgumentError& error) {
    throw FormatError(fmt::format("{}: {}", source, error.what()));
  }
  return config;
}

}  // namespace bitmix::quant
