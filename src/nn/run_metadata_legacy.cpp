// The unversioned checkpoint metadata of earlier releases, mapped onto RunMetadata, so that their
// checkpoints keep loading, resuming and exporting. Two writers produced it:
//
//   the trainer (bitmix train, the search's supernet/):
//     {"format": "bitmix checkpoint", "bitmix_version", "epoch", "step", "threads", "isa",
//      "train_seconds", "dataset": {"name", "channels", "height", "width", "classes",
//      "train_images", "test_images"}, "normalization": {"mean", "std"},
//      "model": {<model spec>, "data": "<--data>", "augment": "...",
//                "quantization": {"source", ..., "bit_config": {<BitConfig>}}},   (QAT runs)
//      "options": {...}, "groups": {"<name>": {"optimizer": {"kind", ...}, "schedule": {...}}},
//      "history": [...]}
//   the search (DIR/model.ckpt):
//     {"model": {<model spec without seed>, "data", "augment"}, "normalization": {...},
//      "search": {"method", "budget", "w_candidates", "a_candidates"},
//      "bit_config": "bits.json"}    (a file name, resolved against the checkpoint's directory)
//
// Fields are checked as strictly as in the current layout; only fields some writer did not
// write fall back to defaults. "normalization" is required: every writer wrote it.
#include <fmt/format.h>

#include "bitmix/core/error.hpp"
#include "metadata_reader.hpp"

namespace bitmix::nn::detail {

namespace {

// The dataset kind of a --data string ("cifar10:/x" -> "cifar10").
std::string data_kind(const std::string& spec) { return spec.substr(0, spec.find(':')); }

std::string search_notes(const MetadataReader& search) {
  std::string notes = fmt::format("{} search", search.value_or("method", std::string("unknown"), [&](std::string_view k) {
                                    return search.string(k);
                                  }));
  if (search.has("budget")) notes += fmt::format(", budget {}", search.string("budget"));
  if (search.has("w_candidates"))
    notes += fmt::format(", candidates W{{{}}}", fmt::join(search.integers("w_candidates", 1, 32), ","));
  if (search.has("a_candidates"))
    notes += fmt::format(" A{{{}}}", fmt::join(search.integers("a_candidates", 1, 32), ","));
  return notes;
}

quant::BitConfig bit_config_file(const MetadataReader& root, const std::filesystem::path& directory) {
  const std::string name = root.string("bit_config");
  const std::filesystem::path file = directory / name;
  try {
    return quant::BitConfig::load(file);
  } catch (const Error& e) {
    throw FormatError(fmt::format("{}: metadata field 'bit_config' names the BitConfig file '{}', which cannot be "
                                  "read beside the checkpoint ({}): pass the BitConfig with --bits FILE",
                                  root.source(), name, e.what()));
  }
}

}  // namespace

RunMetadata legacy_run_metadata(const MetadataReader& root, const std::filesystem::path& directory,
                                const MetadataReadOptions& options) {
  // A versioned document that lost its version must not be half-read as a legacy one.
  for (const char* key : {"provenance", "data", "quantization", "training"})
    if (root.has(key))
      root.fail("metadata_version", fmt::format("{} (the document has the versioned layout's field '{}')",
                                                kRunMetadataVersion, key),
                nullptr);
  RunMetadata m;
  // The model object doubled as a bag of run facts (data, augment, quantization); {} when the
  // trainer was not told the architecture.
  std::optional<MetadataReader> model_object;
  if (root.has("model")) {
    model_object = root.object("model");
    if (!model_object->value().empty())
      m.model = model_spec_from_metadata(root, "model", {"data", "augment", "quantization"});
  }
  if (model_object && model_object->has("data")) m.data.spec = model_object->string("data");

  if (root.has("dataset")) {
    const MetadataReader d = root.object("dataset");
    m.data.name = d.string("name");
    m.data.channels = d.integer("channels", 1, 1 << 20);
    m.data.height = d.integer("height", 1, 1 << 20);
    m.data.width = d.integer("width", 1, 1 << 20);
    m.data.classes = d.integer("classes", 1, 1 << 30);
    m.data.train_images = d.integer("train_images", 0);
    m.data.test_images = d.integer("test_images", 0);
  } else if (m.model) {
    // The search's checkpoint recorded no dataset: its shape is the model's.
    m.data.name = data_kind(m.data.spec);
    m.data.channels = m.model->in_channels;
    m.data.height = m.model->image_height;
    m.data.width = m.model->image_width;
    m.data.classes = m.model->num_classes;
  } else {
    root.fail("dataset", "an object (or a \"model\" object giving the image shape)", nullptr);
  }

  m.normalization = normalization_from_json(root.object("normalization", kNormalizationExpected));

  if (model_object && model_object->has("quantization")) {
    const MetadataReader q = model_object->object("quantization");
    m.quantization = QuantizationRecipe{q.string("source"), bit_config_from_metadata(q, "bit_config")};
  } else if (root.has("bit_config")) {
    if (root.need("bit_config", "").is_object()) {
      m.quantization = QuantizationRecipe{"unknown (legacy metadata)", bit_config_from_metadata(root, "bit_config")};
    } else if (options.resolve_bit_config_file) {
      m.quantization = QuantizationRecipe{fmt::format("search ({} beside the checkpoint)", root.string("bit_config")),
                                          bit_config_file(root, directory)};
    } else {
      root.string("bit_config");  // still type-checked
    }
  }

  const bool trainer = root.has("epoch") || root.has("options") || root.has("history");
  m.provenance.producer = trainer ? "train" : root.has("search") ? "search" : "unknown";
  if (root.has("bitmix_version")) m.provenance.bitmix_version = root.string("bitmix_version");
  if (root.has("threads")) m.provenance.threads = static_cast<int>(root.integer("threads", 0, 1 << 20));
  if (root.has("isa")) m.provenance.isa = root.string("isa");
  if (m.model) m.provenance.seed = m.model->seed;
  m.provenance.notes = "read from unversioned (legacy) metadata";
  if (root.has("search")) m.provenance.notes += "; " + search_notes(root.object("search"));

  if (trainer) {
    TrainingState t;
    t.epoch = static_cast<int>(root.integer("epoch", 0, std::numeric_limits<int>::max()));
    t.step = root.integer("step", 0);
    t.train_seconds = root.value_or("train_seconds", 0.0, [&](std::string_view k) { return root.number(k); });
    t.options = trainer_options_from_json(root.object("options"), /*legacy=*/true);
    m.provenance.seed = t.options.seed;
    // Groups were an object keyed by name, "main" among them.
    const MetadataReader groups = root.object("groups");
    auto group = [&](const std::string& name) {
      const MetadataReader g = groups.object(name);
      const MetadataReader optimizer = g.object("optimizer");
      return ParameterGroupRecord{name, optimizer.string("kind"), schedule_from_json(g.object("schedule"))};
    };
    t.groups.push_back(group("main"));
    for (auto it = groups.value().begin(); it != groups.value().end(); ++it)
      if (it.key() != "main") t.groups.push_back(group(it.key()));
    for (const MetadataReader& h : root.objects("history")) t.history.push_back(epoch_stats_from_json(h, /*legacy=*/true));
    m.training = std::move(t);
  }
  return m;
}

}  // namespace bitmix::nn::detail
