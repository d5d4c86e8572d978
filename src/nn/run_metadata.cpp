// nn::RunMetadata: the one writer (to_json) and the one reader (run_metadata_from_json) of
// checkpoint metadata. The layout is documented in docs/training.md ("Checkpoint metadata").
#include "bitmix/nn/run_metadata.hpp"

#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/version.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "metadata_reader.hpp"

namespace bitmix::nn {

using detail::Json;
using detail::MetadataReader;

namespace {

constexpr std::string_view kFormat = "bitmix checkpoint";

[[noreturn]] void invalid(std::string_view field, const std::string& what) {
  throw ArgumentError(fmt::format("run metadata field '{}': {}", field, what));
}

}  // namespace

Json detail::run_metadata_json(const RunMetadata& m) {
  Json j;
  j["format"] = kFormat;
  j["metadata_version"] = kRunMetadataVersion;
  const Provenance& p = m.provenance;
  j["provenance"] = {{"producer", p.producer}, {"bitmix_version", p.bitmix_version}, {"command_line", p.command_line},
                     {"seed", p.seed},         {"parent", p.parent},                 {"threads", p.threads},
                     {"isa", p.isa},           {"notes", p.notes}};
  j["model"] = m.model ? Json::parse(model_spec_to_json(*m.model)) : Json(nullptr);
  const DataDescription& d = m.data;
  j["data"] = {{"name", d.name},         {"spec", d.spec},
               {"channels", d.channels}, {"height", d.height},
               {"width", d.width},       {"classes", d.classes},
               {"class_names", d.class_names}, {"train_images", d.train_images},
               {"test_images", d.test_images}};
  j["normalization"] = {{"mean", m.normalization.mean}, {"std", m.normalization.stddev}};
  if (m.quantization)
    j["quantization"] = {{"source", m.quantization->source},
                         {"bit_config", Json::parse(m.quantization->bit_config.to_json())}};
  else
    j["quantization"] = nullptr;
  if (m.training) {
    const TrainingState& t = *m.training;
    Json groups = Json::array();
    for (const ParameterGroupRecord& g : t.groups)
      groups.push_back({{"name", g.name}, {"optimizer", g.optimizer}, {"schedule", detail::schedule_to_json(g.schedule)}});
    Json history = Json::array();
    for (const EpochStats& s : t.history) history.push_back(detail::epoch_stats_to_json(s));
    j["training"] = {{"epoch", t.epoch},
                     {"step", t.step},
                     {"train_seconds", t.train_seconds},
                     {"options", detail::trainer_options_to_json(t.options)},
                     {"groups", groups},
                     {"history", history}};
    if (t.partial)
      j["training"]["partial_epoch"] = {{"batches", t.partial->batches},   {"loss_sum", t.partial->loss_sum},
                                        {"extra_sum", t.partial->extra_sum}, {"correct", t.partial->correct},
                                        {"images", t.partial->images},     {"seconds", t.partial->seconds}};
  } else {
    j["training"] = nullptr;
  }
  return j;
}

namespace {

RunMetadata current_run_metadata(const MetadataReader& root) {
  RunMetadata m;
  const int64_t version = root.integer("metadata_version");
  if (version != kRunMetadataVersion)
    throw FormatError(fmt::format("{}: metadata_version {} is not supported (this build reads version {} and the "
                                  "unversioned layout of earlier releases); read it with the bitmix that wrote it",
                                  root.source(), version, kRunMetadataVersion));
  if (const std::string format = root.string("format"); format != kFormat)
    root.fail("format", fmt::format("\"{}\"", kFormat), &root.need("format", ""));

  const MetadataReader p = root.object("provenance");
  m.provenance.producer = p.string("producer");
  m.provenance.bitmix_version = p.string("bitmix_version");
  m.provenance.command_line = p.string("command_line");
  m.provenance.seed = p.unsigned64("seed");
  m.provenance.parent = p.string("parent");
  m.provenance.threads = static_cast<int>(p.integer("threads", 0, 1 << 20));
  m.provenance.isa = p.string("isa");
  m.provenance.notes = p.string("notes");

  if (!root.is_null("model")) m.model = detail::model_spec_from_metadata(root, "model");

  const MetadataReader d = root.object("data");
  m.data.name = d.string("name");
  m.data.spec = d.string("spec");
  m.data.channels = d.integer("channels", 1, 1 << 20);
  m.data.height = d.integer("height", 1, 1 << 20);
  m.data.width = d.integer("width", 1, 1 << 20);
  m.data.classes = d.integer("classes", 1, 1 << 30);
  m.data.class_names = d.strings("class_names");
  m.data.train_images = d.integer("train_images", 0);
  m.data.test_images = d.integer("test_images", 0);

  m.normalization = detail::normalization_from_json(root.object("normalization", detail::kNormalizationExpected));

  if (!root.is_null("quantization")) {
    const MetadataReader q = root.object("quantization");
    m.quantization = QuantizationRecipe{q.string("source"), detail::bit_config_from_metadata(q, "bit_config")};
  }

  if (!root.is_null("training")) {
    const MetadataReader t = root.object("training");
    TrainingState s;
    s.epoch = static_cast<int>(t.integer("epoch", 0, std::numeric_limits<int>::max()));
    s.step = t.integer("step", 0);
    s.train_seconds = t.number("train_seconds");
    s.options = detail::trainer_options_from_json(t.object("options"), /*legacy=*/false);
    for (const MetadataReader& g : t.objects("groups"))
      s.groups.push_back({g.string("name"), g.string("optimizer"), detail::schedule_from_json(g.object("schedule"))});
    for (const MetadataReader& h : t.objects("history")) s.history.push_back(detail::epoch_stats_from_json(h, /*legacy=*/false));
    if (t.has("partial_epoch") && !t.is_null("partial_epoch")) {
      const MetadataReader pe = t.object("partial_epoch");
      PartialEpoch e;
      e.batches = pe.integer("batches", 1);
      e.loss_sum = pe.number("loss_sum");
      e.extra_sum = pe.number("extra_sum");
      e.correct = pe.integer("correct", 0);
      e.images = pe.integer("images", 1);
      e.seconds = pe.number("seconds");
      s.partial = e;
    }
    m.training = std::move(s);
  }
  return m;
}

}  // namespace

DataDescription describe_data(const data::Dataset& train, std::string spec) {
  DataDescription d;
  d.name = train.name;
  d.spec = std::move(spec);
  d.channels = train.channels;
  d.height = train.height;
  d.width = train.width;
  d.classes = train.num_classes();
  d.class_names = train.class_names;
  d.train_images = train.size();
  return d;
}

Provenance Provenance::current(std::string producer, std::string command_line, uint64_t seed, std::string parent) {
  Provenance p;
  p.producer = std::move(producer);
  p.bitmix_version = std::string(version());
  p.command_line = std::move(command_line);
  p.seed = seed;
  p.parent = std::move(parent);
  p.threads = num_threads();
  p.isa = std::string(isa_name(active_isa()));
  return p;
}

void RunMetadata::validate() const {
  if (provenance.producer.empty()) invalid("provenance.producer", "empty (name the command that wrote the checkpoint)");
  const DataDescription& d = data;
  if (d.channels < 1 || d.height < 1 || d.width < 1 || d.classes < 1)
    invalid("data", fmt::format("image shape {}x{}x{} with {} classes: expected positive sizes", d.channels, d.height,
                                d.width, d.classes));
  if (!d.class_names.empty() && static_cast<int64_t>(d.class_names.size()) != d.classes)
    invalid("data.class_names", fmt::format("{} names for {} classes", d.class_names.size(), d.classes));
  if (d.train_images < 0 || d.test_images < 0) invalid("data", "negative image counts");
  if (model) {
    const ModelSpec& s = *model;
    if (s.in_channels != d.channels || s.image_height != d.height || s.image_width != d.width ||
        s.num_classes != d.classes)
      invalid("model", fmt::format("the model takes {}x{}x{} images into {} classes, the data has {}x{}x{} and {}",
                                   s.in_channels, s.image_height, s.image_width, s.num_classes, d.channels, d.height,
                                   d.width, d.classes));
  }
  const data::Normalization& n = normalization;
  if (n.mean.size() != static_cast<std::size_t>(d.channels) || n.stddev.size() != n.mean.size())
    invalid("normalization", fmt::format("{} means and {} standard deviations for {} channels: expected one of each "
                                         "per channel (mean 0, std 1 for a model that takes raw pixels)",
                                         n.mean.size(), n.stddev.size(), d.channels));
  for (std::size_t c = 0; c < n.mean.size(); ++c)
    if (!std::isfinite(n.mean[c]) || !std::isfinite(n.stddev[c]) || !(n.stddev[c] > 0.0f))
      invalid("normalization", fmt::format("channel {}: mean {} and std {}: expected finite values and std > 0", c,
                                           n.mean[c], n.stddev[c]));
  if (quantization) {
    try {
      quantization->bit_config.validate();
    } catch (const ArgumentError& e) {
      invalid("quantization.bit_config", e.what());
    }
  }
  if (training) {
    const TrainingState& t = *training;
    if (t.epoch < 0 || t.epoch > t.options.epochs)
      invalid("training.epoch", fmt::format("{} of {} epochs", t.epoch, t.options.epochs));
    if (t.step < 0) invalid("training.step", fmt::format("{}: expected >= 0", t.step));
    if (t.history.size() != static_cast<std::size_t>(t.epoch))
      invalid("training.history", fmt::format("{} entries for {} completed epochs", t.history.size(), t.epoch));
    for (std::size_t i = 0; i < t.history.size(); ++i)
      if (t.history[i].epoch != static_cast<int>(i) + 1)
        invalid(fmt::format("training.history[{}].epoch", i), fmt::format("{}: expected {}", t.history[i].epoch, i + 1));
    if (t.partial) {
      const PartialEpoch& p = *t.partial;
      if (t.epoch >= t.options.epochs)
        invalid("training.partial_epoch", fmt::format("a part of epoch {} of a {}-epoch run", t.epoch + 1, t.options.epochs));
      if (p.batches < 1 || p.batches > t.step)
        invalid("training.partial_epoch.batches", fmt::format("{}: expected 1 to the step count {}", p.batches, t.step));
      if (p.images < p.batches || p.correct < 0 || p.correct > p.images)
        invalid("training.partial_epoch", fmt::format("{} correct of {} images in {} batches", p.correct, p.images, p.batches));
    }
    if (!t.groups.empty() && t.groups.front().name != "main")
      invalid("training.groups", fmt::format("starts with '{}': expected the \"main\" group first", t.groups.front().name));
  }
}

std::string to_json(const RunMetadata& metadata) {
  metadata.validate();
  return detail::run_metadata_json(metadata).dump(2);
}

RunMetadata run_metadata_from_json(std::string_view text, std::string_view source,
                                   const std::filesystem::path& directory, const MetadataReadOptions& options) {
  const Json root = detail::parse_metadata_text(text, source);
  const MetadataReader r(root, "", source);
  if (!root.is_object()) r.fail("", "a JSON object", &root);
  RunMetadata m = r.has("metadata_version") ? current_run_metadata(r) : detail::legacy_run_metadata(r, directory, options);
  try {
    m.validate();
  } catch (const ArgumentError& e) {
    throw FormatError(fmt::format("{}: {}", source, e.what()));
  }
  return m;
}

void set_run_metadata(Checkpoint& checkpoint, const RunMetadata& metadata) { checkpoint.metadata = to_json(metadata); }

RunMetadata read_run_metadata(const Checkpoint& checkpoint, const std::filesystem::path& path,
                              const MetadataReadOptions& options) {
  return run_metadata_from_json(checkpoint.metadata, fmt::format("checkpoint {}", path.string()), path.parent_path(),
                                options);
}

}  // namespace bitmix::nn
