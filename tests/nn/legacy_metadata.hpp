#pragma once
// Test fixtures: checkpoint metadata in the unversioned layout that bitmix wrote before
// "metadata_version" existed, key for key as its writers produced it (Trainer::metadata_json,
// QuantizationSetup::metadata_json and model_metadata of the CLI, and run_search), so that the
// legacy reader is tested against real documents after the code stopped writing them.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "bitmix/core/version.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/training_options.hpp"
#include "bitmix/quant/bit_config.hpp"

namespace bitmix::nn::testing {

// The "model" object of `bitmix train`: the spec, "data" and "augment", and for QAT runs
// "quantization" (QuantizationSetup::metadata_json; the BitConfig must have its totals).
inline nlohmann::json legacy_train_model_object(const ModelSpec& spec, const std::string& data,
                                                const std::string& augment, const quant::BitConfig* config = nullptr,
                                                const std::string& source = {}) {
  nlohmann::json model_meta = nlohmann::json::parse(model_spec_to_json(spec));
  model_meta["data"] = data;
  model_meta["augment"] = augment;
  if (config != nullptr) {
    const quant::BitTotals& t = *config->totals;
    nlohmann::ordered_json j;
    j["source"] = source;
    j["policy"] = config->policy.describe();
    j["summary"] = config->summary();
    j["macs"] = *t.macs;
    j["bitops"] = *t.bitops;
    j["weight_bits"] = *t.weight_bits;
    j["weight_bytes"] = static_cast<double>(*t.weight_bits) / 8.0;
    j["float_bitops"] = *t.macs * quant::kFloatBits * quant::kFloatBits;
    j["float_weight_bytes"] = static_cast<double>(*t.params) * 4.0;
    j["bit_config"] = nlohmann::ordered_json::parse(config->to_json());
    model_meta["quantization"] = nlohmann::json::parse(j.dump());
  }
  return model_meta;
}

// The "model" object the search stored (cli::model_metadata): no seed.
inline nlohmann::json legacy_search_model_object(const ModelSpec& ms, const std::string& data, const std::string& augment) {
  return nlohmann::json::parse(
      "{\"arch\": \"" + ms.arch + "\", \"in_channels\": " + std::to_string(ms.in_channels) +
      ", \"image_height\": " + std::to_string(ms.image_height) + ", \"image_width\": " + std::to_string(ms.image_width) +
      ", \"num_classes\": " + std::to_string(ms.num_classes) + ", \"shortcut\": \"" +
      std::string(shortcut_name(ms.shortcut)) + "\", \"width\": " + std::to_string(ms.width) +
      ", \"zero_init_residual\": " + (ms.zero_init_residual ? "true" : "false") + ", \"data\": \"" + data +
      "\", \"augment\": \"" + augment + "\"}");
}

struct LegacyTrainerRun {
  TrainerOptions options;
  int epoch = 0;
  int64_t step = 0;
  int threads = 1;
  std::string isa = "scalar";
  double train_seconds = 0;
  std::string dataset_name;
  int64_t channels = 0, height = 0, width = 0, classes = 0, train_images = 0, test_images = 0;
  std::vector<float> mean, stddev;
  nlohmann::json model = nlohmann::json::object();
  // name -> (Optimizer::describe(), LrSchedule::describe()), "main" first.
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> groups;
  std::vector<EpochStats> history;
};

// Trainer::metadata_json of the unversioned layout.
inline std::string legacy_trainer_metadata(const LegacyTrainerRun& r) {
  using json = nlohmann::json;
  const TrainerOptions& o = r.options;
  json opts = {{"epochs", o.epochs},
               {"batch_size", o.batch_size},
               {"optimizer", optimizer_kind_name(o.optimizer)},
               {"lr", o.lr},
               {"weight_decay", o.weight_decay},
               {"decay_all", o.decay_all},
               {"momentum", o.momentum},
               {"nesterov", o.nesterov},
               {"beta1", o.beta1},
               {"beta2", o.beta2},
               {"schedule", schedule_kind_name(o.schedule)},
               {"warmup_epochs", o.warmup_epochs},
               {"min_lr", o.min_lr},
               {"milestones", o.milestones},
               {"gamma", o.gamma},
               {"label_smoothing", o.label_smoothing},
               {"ema_decay", o.ema_decay},
               {"pad_crop", o.augmentation.pad_crop},
               {"horizontal_flip", o.augmentation.horizontal_flip},
               {"alternate_flip", o.augmentation.alternate_flip},
               {"eval_flip", o.eval_flip},
               {"eval_shift", o.eval_shift},
               {"seed", o.seed}};
  json groups = json::object();
  for (const auto& [name, described] : r.groups)
    groups[name] = {{"optimizer", json::parse(described.first)}, {"schedule", json::parse(described.second)}};
  json history = json::array();
  for (const EpochStats& s : r.history) {
    json j = {{"epoch", s.epoch},
              {"lr", s.lr},
              {"train_loss", s.train_loss},
              {"train_accuracy", s.train_accuracy},
              {"extra_loss", s.extra_loss},
              {"seconds", s.seconds},
              {"images_per_second", s.images_per_second}};
    if (s.has_test) {
      j["test_loss"] = s.test_loss;
      j["test_accuracy"] = s.test_accuracy;
    }
    history.push_back(j);
  }
  json meta = {{"format", "bitmix checkpoint"},
               {"bitmix_version", std::string(version())},
               {"epoch", r.epoch},
               {"step", r.step},
               {"threads", r.threads},
               {"isa", r.isa},
               {"train_seconds", r.train_seconds},
               {"dataset", {{"name", r.dataset_name},
                            {"channels", r.channels},
                            {"height", r.height},
                            {"width", r.width},
                            {"classes", r.classes},
                            {"train_images", r.train_images},
                            {"test_images", r.test_images}}},
               {"normalization", {{"mean", r.mean}, {"std", r.stddev}}},
               {"model", r.model},
               {"options", opts},
               {"groups", groups},
               {"history", history}};
  return meta.dump(2);
}

// run_search's DIR/model.ckpt metadata: the BitConfig as a file name beside the checkpoint.
inline std::string legacy_search_metadata(const nlohmann::json& model_object, const std::vector<float>& mean,
                                          const std::vector<float>& stddev, const std::string& bit_config_file) {
  using json = nlohmann::ordered_json;
  json ck_meta = {{"model", json::parse(model_object.dump())},
                  {"normalization", {{"mean", mean}, {"std", stddev}}},
                  {"search", {{"method", "ebs"}, {"budget", "avg-bits 3"}, {"w_candidates", {2, 3, 4}}, {"a_candidates", {2, 3, 4}}}},
                  {"bit_config", bit_config_file}};
  return ck_meta.dump();
}

}  // namespace bitmix::nn::testing
