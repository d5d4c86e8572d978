#pragma once
// Internal to nn: the typed reader of checkpoint metadata JSON shared by the current layout
// (run_metadata.cpp) and the legacy one (run_metadata_legacy.cpp). Every accessor checks
// presence, type and range and throws FormatError "<source>: metadata field '<path>': expected
// <what>, got <what it is>", so no caller handles nlohmann exceptions.

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/nn/run_metadata.hpp"

namespace bitmix::nn::detail {

using Json = nlohmann::ordered_json;

// What a missing or malformed "normalization" should have been.
inline constexpr std::string_view kNormalizationExpected =
    "an object with the per-channel \"mean\" and \"std\" of the inputs the model was trained on (required: "
    "without them the model sees wrongly scaled inputs)";

// The one parse of a metadata text: syntax errors name `source`.
Json parse_metadata_text(std::string_view text, std::string_view source);

class MetadataReader {
 public:
  MetadataReader(const Json& value, std::string path, std::string_view source)
      : value_(&value), path_(std::move(path)), source_(source) {}

  const Json& value() const { return *value_; }
  const std::string& path() const { return path_; }
  std::string_view source() const { return source_; }
  std::string child_path(std::string_view key) const;
  [[noreturn]] void fail(const std::string& path, std::string_view expected, const Json* got) const;

  bool has(std::string_view key) const;
  bool is_null(std::string_view key) const;  // present and null
  // The member, which must exist (FormatError "... is missing: expected <expected>").
  const Json& need(std::string_view key, std::string_view expected) const;
  MetadataReader object(std::string_view key, std::string_view expected = "an object") const;
  std::vector<MetadataReader> objects(std::string_view key) const;  // an array of objects

  std::string string(std::string_view key) const;
  bool boolean(std::string_view key) const;
  int64_t integer(std::string_view key, int64_t min = std::numeric_limits<int64_t>::min(),
                  int64_t max = std::numeric_limits<int64_t>::max()) const;
  uint64_t unsigned64(std::string_view key) const;
  double number(std::string_view key) const;  // finite
  float real(std::string_view key) const;     // finite and within float's range
  std::vector<float> reals(std::string_view key) const;
  std::vector<int> integers(std::string_view key, int min, int max) const;
  std::vector<std::string> strings(std::string_view key) const;

  // With a default when the member is absent (legacy documents written before a field existed);
  // a present member is checked as strictly as above.
  template <class T, class Get>
  T value_or(std::string_view key, T fallback, Get get) const {
    return has(key) ? get(key) : fallback;
  }

 private:
  const Json* value_;
  std::string path_;
  std::string_view source_;
};

// The document to_json writes, as JSON (also the base of the trainer's summary.json).
Json run_metadata_json(const RunMetadata& metadata);

// Field layouts shared by both readers. `legacy` lets fields that older writers lacked take their
// defaults.
Json epoch_stats_to_json(const EpochStats& stats);
EpochStats epoch_stats_from_json(const MetadataReader& r, bool legacy);
Json trainer_options_to_json(const TrainerOptions& options);
TrainerOptions trainer_options_from_json(const MetadataReader& r, bool legacy);
Json schedule_to_json(const LrScheduleOptions& schedule);
LrScheduleOptions schedule_from_json(const MetadataReader& r);
// The model spec at `key` (model_spec_from_json: every key known, exact types); `other_keys`
// are keys of that object that are not the spec's (the legacy layout's data, augment and
// quantization), left for the caller to read.
ModelSpec model_spec_from_metadata(const MetadataReader& parent, std::string_view key,
                                   std::initializer_list<std::string_view> other_keys = {});
quant::BitConfig bit_config_from_metadata(const MetadataReader& parent, std::string_view key);
data::Normalization normalization_from_json(const MetadataReader& r);

// The unversioned layout written before "metadata_version" existed (run_metadata_legacy.cpp).
RunMetadata legacy_run_metadata(const MetadataReader& root, const std::filesystem::path& directory,
                                const MetadataReadOptions& options);

}  // namespace bitmix::nn::detail
