// HAWQ's measurement cache for `bitmix allocate --method hawq`: see allocate.hpp.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "allocate.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"

namespace bitmix::cli {

uint64_t file_fingerprint(const std::filesystem::path& path) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (uint8_t byte : read_file_bytes(path)) h = (h ^ byte) * 0x100000001b3ULL;
  return h;
}

std::optional<search::HawqSensitivity> load_hawq_cache(const std::filesystem::path& path, const std::string& key) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  const std::string text = read_file_text(path);
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.at("format").get<std::string>() != "bitmix-hawq-cache 1")
      throw FormatError(fmt::format("{}: not a bitmix HAWQ cache (format '{}')", path.string(),
                                    j.at("format").get<std::string>()));
    if (j.at("key").get<std::string>() != key)
      throw ArgumentError(fmt::format("{}: this HAWQ cache belongs to another measurement ({}; this one: {}); delete "
                                      "it or give another --hawq-cache",
                                      path.string(), j.at("key").get<std::string>(), key));
    search::HawqSensitivity h;
    h.iterations = j.at("iterations").get<int>();
    h.converged = j.at("converged").get<bool>();
    h.seconds = j.at("seconds").get<double>();
    for (const nlohmann::json& l : j.at("layers")) {
      search::HawqLayer layer;
      layer.name = l.at("name").get<std::string>();
      layer.params = l.at("params").get<int64_t>();
      layer.trace = l.at("trace").get<double>();
      layer.perturbation = l.at("perturbation").get<std::vector<double>>();
      layer.omega = l.at("omega").get<std::vector<double>>();
      if (layer.perturbation.size() != layer.omega.size())
        throw FormatError(fmt::format("{}: layer '{}' has {} perturbations and {} omegas", path.string(), layer.name,
                                      layer.perturbation.size(), layer.omega.size()));
      h.layers.push_back(std::move(layer));
    }
    return h;
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: malformed HAWQ cache: {}", path.string(), e.what()));
  }
}

void save_hawq_cache(const std::filesystem::path& path, const std::string& key, const search::HawqSensitivity& h) {
  nlohmann::ordered_json j;
  j["format"] = "bitmix-hawq-cache 1";
  j["key"] = key;
  j["iterations"] = h.iterations;
  j["converged"] = h.converged;
  j["seconds"] = h.seconds;
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const search::HawqLayer& l : h.layers)
    layers.push_back({{"name", l.name},
                      {"params", l.params},
                      {"trace", l.trace},
                      {"perturbation", l.perturbation},
                      {"omega", l.omega}});
  j["layers"] = layers;
  // %.17g round-trips doubles: nlohmann writes the shortest exact representation.
  write_file_atomic(path, j.dump(1) + "\n");
}

}  // namespace bitmix::cli
