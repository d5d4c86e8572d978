#include "bitmix/search/cost.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "core/strict_json.hpp"

namespace bitmix::search {

namespace {
void check_bits(int w_bits, int a_bits, std::string_view where) {
  if (w_bits < 1 || w_bits > 8 || a_bits < 1 || a_bits > 8)
    throw ArgumentError(fmt::format("{}: bits W{}A{} outside 1..8", where, w_bits, a_bits));
}
}  // namespace

void LatencyTable::set(const std::string& layer, int w_bits, int a_bits, double milliseconds) {
  check_bits(w_bits, a_bits, layer);
  if (!(milliseconds >= 0) || !std::isfinite(milliseconds))
    throw ArgumentError(fmt::format("latency of {} at W{}A{}: {} ms is not a finite non-negative time", layer,
                                    w_bits, a_bits, milliseconds));
  entries_[layer][{w_bits, a_bits}] = milliseconds;
}

bool LatencyTable::has(const std::string& layer, int w_bits, int a_bits) const {
  const auto it = entries_.find(layer);
  return it != entries_.end() && it->second.count({w_bits, a_bits}) != 0;
}

double LatencyTable::at(const std::string& layer, int w_bits, int a_bits) const {
  const auto it = entries_.find(layer);
  if (it == entries_.end())
    throw ArgumentError(fmt::format("latency table has no layer '{}' (regenerate it for this model with "
                                    "`bitmix latency`)",
                                    layer));
  const auto entry = it->second.find({w_bits, a_bits});
  if (entry == it->second.end())
    throw ArgumentError(fmt::format("latency table has no entry for layer '{}' at W{}A{}", layer, w_bits, a_bits));
  return entry->second;
}

void LatencyTable::require(const std::vector<LayerInfo>& layers, const std::vector<int>& w_bits,
                           const std::vector<int>& a_bits) const {
  for (const LayerInfo& layer : layers) {
    if (layer.pinned) {
      at(layer.name, layer.pinned_w_bits, layer.pinned_a_bits);
      continue;
    }
    for (int w : w_bits)
      for (int a : a_bits) at(layer.name, w, a);
  }
}

void LatencyTable::save(const std::filesystem::path& path) const {
  nlohmann::ordered_json json;
  json["format"] = "bitmix-latency-table";
  json["version"] = 1;
  json["machine"] = machine_;
  json["batch"] = batch_;
  json["threads"] = threads_;
  json["unit"] = "ms";
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const auto& [name, entries] : entries_) {
    nlohmann::ordered_json layer;
    layer["name"] = name;
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& [bits, ms] : entries) list.push_back({{"w_bits", bits.first}, {"a_bits", bits.second}, {"ms", ms}});
    layer["entries"] = list;
    layers.push_back(layer);
  }
  json["layers"] = layers;
  write_file_atomic(path, json.dump(1) + "\n");
}

LatencyTable LatencyTable::load(const std::filesystem::path& path) {
  return parse(read_file_text(path), path.string());
}

LatencyTable LatencyTable::parse(std::string_view text, std::string_view source) {
  const std::string file(source);
  const nlohmann::json json = bitmix::detail::parse_json_strict(text, file);
  // Integers are read only from JSON integers in range: nlohmann's get<int>() of 1e20 or of
  // 377777777777777777777 is an out-of-range float conversion (undefined behaviour; found by the
  // latency_table fuzz target).
  auto integer = [&](const nlohmann::json& object, const char* key, int64_t lo, int64_t hi, const std::string& where) {
    if (!object.contains(key))
      throw FormatError(fmt::format("{}: malformed latency table: {}missing \"{}\"", file, where, key));
    const nlohmann::json& v = object.at(key);
    const bool fits = v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{1} << 62) &&
                      v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    if (!fits)
      throw FormatError(fmt::format("{}: {}\"{}\" = {}: expected an integer from {} to {}", file, where, key, v.dump(), lo,
                                    hi));
    return static_cast<int>(v.get<int64_t>());
  };
  try {
    if (!json.is_object() || json.value("format", "") != "bitmix-latency-table")
      throw FormatError(fmt::format("{}: not a bitmix latency table (\"format\" must be \"bitmix-latency-table\")", file));
    if (!json.contains("version") || json.at("version") != 1)
      throw FormatError(fmt::format("{}: latency table version {}, this bitmix reads version 1", file,
                                    json.contains("version") ? json.at("version").dump() : std::string("(none)")));
    const int batch = integer(json, "batch", std::numeric_limits<int>::min(), std::numeric_limits<int>::max(), "");
    const int threads = integer(json, "threads", std::numeric_limits<int>::min(), std::numeric_limits<int>::max(), "");
    if (batch < 1 || threads < 1)
      throw FormatError(fmt::format("{}: batch {} and threads {} must be >= 1", file, batch, threads));
    LatencyTable table(json.value("machine", ""), batch, threads);
    if (!json.at("layers").is_array()) throw FormatError(fmt::format("{}: malformed latency table: \"layers\" is not an array", file));
    for (const auto& layer : json.at("layers")) {
      const std::string name = layer.at("name").get<std::string>();
      if (!layer.at("entries").is_array())
        throw FormatError(fmt::format("{}: malformed latency table: layer '{}': \"entries\" is not an array", file, name));
      for (const auto& entry : layer.at("entries")) {
        const std::string where = fmt::format("layer '{}': ", name);
        // Any int passes here; set() checks 1..8 and names the entry (W9A2).
        constexpr int64_t lo = std::numeric_limits<int>::min(), hi = std::numeric_limits<int>::max();
        const int w = integer(entry, "w_bits", lo, hi, where), a = integer(entry, "a_bits", lo, hi, where);
        if (!entry.contains("ms") || !entry.at("ms").is_number())
          throw FormatError(fmt::format("{}: malformed latency table: {}W{}A{}: \"ms\" is not a number", file, where, w, a));
        try {
          table.set(name, w, a, entry.at("ms").get<double>());
        } catch (const ArgumentError& e) {
          throw FormatError(fmt::format("{}: {}", file, e.what()));
        }
      }
    }
    return table;
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: malformed latency table: {}", file, e.what()));
  }
}

std::string_view cost_kind_name(CostKind kind) {
  switch (kind) {
    case CostKind::bitops: return "bitops";
    case CostKind::size: return "size";
    case CostKind::latency: return "latency";
  }
  return "unknown";
}

std::string Budget::describe() const {
  switch (kind) {
    case Kind::bitops: return fmt::format("{:g} GBitOPs per image", value);
    case Kind::avg_bits: return fmt::format("BitOPs of uniform W{0:g}A{0:g}", value);
    case Kind::size_kb: return fmt::format("{:g} KiB of weights", value);
    case Kind::latency_ms: return fmt::format("{:g} ms", value);
  }
  return "?";
}

std::vector<LayerBits> uniform_bits(const std::vector<LayerInfo>& layers, int w_bits, int a_bits) {
  std::vector<LayerBits> bits;
  bits.reserve(layers.size());
  for (const LayerInfo& l : layers)
    bits.push_back(l.pinned ? LayerBits{l.pinned_w_bits, l.pinned_a_bits} : LayerBits{w_bits, a_bits});
  return bits;
}

double total_bitops(const std::vector<LayerInfo>& layers, const std::vector<LayerBits>& bits) {
  return CostModel(CostKind::bitops, layers).total(bits);
}

double total_weight_bits(const std::vector<LayerInfo>& layers, const std::vector<LayerBits>& bits) {
  return CostModel(CostKind::size, layers).total(bits);
}

ResolvedBudget resolve_budget(const Budget& budget, const std::vector<LayerInfo>& layers) {
  if (!(budget.value > 0) || !std::isfinite(budget.value))
    throw ArgumentError(fmt::format("budget {}: must be a positive number", budget.describe()));
  switch (budget.kind) {
    case Budget::Kind::bitops: return {CostKind::bitops, budget.value * 1e9};
    case Budget::Kind::avg_bits: {
      if (budget.value < 1 || budget.value > 8)
        throw ArgumentError(fmt::format("--budget-avg-bits {:g}: expected a number from 1 to 8", budget.value));
      // The BitOPs of uniform W_B A_B; pinned layers count at their pinned bits. A fractional
      // B (e.g. 2.5) is allowed and means B² BitOPs per MAC on the searched layers.
      double value = 0;
      for (const LayerInfo& l : layers)
        value += static_cast<double>(l.macs) *
                 (l.pinned ? static_cast<double>(l.pinned_w_bits * l.pinned_a_bits) : budget.value * budget.value);
      return {CostKind::bitops, value};
    }
    case Budget::Kind::size_kb: return {CostKind::size, budget.value * 1024.0 * 8.0};
    case Budget::Kind::latency_ms: return {CostKind::latency, budget.value};
  }
  return {};
}

CostModel::CostModel(CostKind kind, std::vector<LayerInfo> layers, const LatencyTable* latency)
    : kind_(kind), layers_(std::move(layers)), latency_(latency) {
  if (kind_ == CostKind::latency && latency_ == nullptr)
    throw ArgumentError("a latency budget needs a latency table (--latency-table FILE)");
}

double CostModel::layer_cost(std::size_t layer, int w_bits, int a_bits) const {
  const LayerInfo& l = layers_[layer];
  switch (kind_) {
    case CostKind::bitops: return static_cast<double>(l.macs) * w_bits * a_bits;
    case CostKind::size: return static_cast<double>(l.params) * w_bits;
    case CostKind::latency: return latency_->at(l.name, w_bits, a_bits);
  }
  return 0;
}

double CostModel::total(const std::vector<LayerBits>& bits) const {
  if (bits.size() != layers_.size())
    throw ArgumentError(fmt::format("cost of {} layer bitwidths for a model with {} layers", bits.size(),
                                    layers_.size()));
  double sum = 0;
  for (std::size_t i = 0; i < layers_.size(); ++i) sum += layer_cost(i, bits[i].w_bits, bits[i].a_bits);
  return sum;
}

double CostModel::uniform(int w_bits, int a_bits) const { return total(uniform_bits(layers_, w_bits, a_bits)); }

Penalty budget_penalty(double expected_cost, double budget, double lambda) {
  if (!(expected_cost > 0) || !(budget > 0)) return {0, 0};
  const double log_ratio = std::log(expected_cost / budget);
  return {lambda * log_ratio * log_ratio, 2.0 * lambda * log_ratio / expected_cost};
}

}  // namespace bitmix::search
