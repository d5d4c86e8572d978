// nn::RunMetadata: the document round-trips every field; every field is required and type-checked
// (a FormatError naming the file and the field's JSON path); bad documents (syntax, versions,
// normalization) are refused with what is wrong; the unversioned layout of earlier releases
// still loads, including a trainer checkpoint that resumes exactly and a search checkpoint whose
// BitConfig is a file beside it.
#include "bitmix/nn/run_metadata.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/nn/trainer.hpp"
#include "legacy_metadata.hpp"
#include "tiny_task.hpp"

namespace bitmix::nn {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

quant::BitConfig tiny_bit_config() {
  auto model = testing::tiny_resnet8(4);
  quant::BitConfig config = uniform_bit_config(*model, {1, 8, 8}, "resnet8", UniformBits{3, 4});
  annotate_bit_config(config, *model, {1, 8, 8});
  return config;
}

RunMetadata full_metadata() {
  RunMetadata m;
  m.model = testing::tiny_resnet8_spec(4);
  m.data = describe_data(testing::band_images(30, 1), "bands:/data/bands");
  m.data.test_images = 9;
  m.normalization = {{0.25f}, {0.5f}};
  m.quantization = QuantizationRecipe{"--quant lsq --wbits 3 --abits 4", tiny_bit_config()};
  m.provenance = Provenance::current("train", "bitmix train --model resnet8", 7, "float.ckpt");
  m.provenance.notes = "a note";
  TrainingState t;
  t.epoch = 2;
  t.step = 10;
  t.train_seconds = 1.5;
  t.options.epochs = 3;
  t.options.milestones = {2};
  t.options.seed = 7;
  t.options.ema_decay = 0.5f;
  t.options.augmentation.pad_crop = 2;
  t.options.eval_shift = 1;
  LrScheduleOptions main_schedule;
  main_schedule.total_steps = 15;
  main_schedule.steps_per_epoch = 5;
  main_schedule.milestones = {2};
  LrScheduleOptions strength_schedule;
  strength_schedule.kind = ScheduleKind::constant;
  t.groups = {{"main", "sgd", main_schedule}, {"strengths", "adam", strength_schedule}};
  EpochStats first;
  first.epoch = 1;
  first.lr = 0.1f;
  first.train_loss = 1.25;
  first.train_accuracy = 0.5;
  first.seconds = 0.75;
  first.images_per_second = 40;
  first.has_test = true;
  first.test_loss = 1.5;
  first.test_accuracy = 0.375;
  EpochStats second = first;
  second.epoch = 2;
  second.has_test = false;
  t.history = {first, second};
  m.training = t;
  return m;
}

constexpr std::string_view kSource = "checkpoint run.ckpt";

RunMetadata parse(const std::string& text) { return run_metadata_from_json(text, kSource); }

// Runs `f`, which must throw FormatError mentioning every one of `parts`.
void expect_format_error(const std::function<void()>& f, const std::vector<std::string>& parts,
                         const std::string& context) {
  try {
    f();
    ADD_FAILURE() << context << ": accepted";
  } catch (const FormatError& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << context << ": " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << context << ": not a FormatError: " << e.what();
  }
}

TEST(RunMetadata, RoundTripsEveryField) {
  const RunMetadata m = full_metadata();
  const std::string text = to_json(m);
  const RunMetadata back = parse(text);
  EXPECT_EQ(to_json(back), text);
  ASSERT_TRUE(back.model && back.quantization && back.training);
  EXPECT_EQ(model_spec_to_json(*back.model), model_spec_to_json(*m.model));
  EXPECT_EQ(back.data.class_names, (std::vector<std::string>{"top", "middle", "bottom"}));
  EXPECT_EQ(back.data.spec, "bands:/data/bands");
  EXPECT_EQ(back.normalization.stddev, std::vector<float>{0.5f});
  EXPECT_EQ(back.quantization->bit_config.to_json(), m.quantization->bit_config.to_json());
  EXPECT_EQ(back.provenance.parent, "float.ckpt");
  EXPECT_EQ(back.training->options.ema_decay, 0.5f);
  EXPECT_EQ(back.training->options.milestones, std::vector<int>{2});
  ASSERT_EQ(back.training->groups.size(), 2u);
  EXPECT_EQ(back.training->groups[1].name, "strengths");
  EXPECT_EQ(back.training->groups[1].schedule.kind, ScheduleKind::constant);
  EXPECT_TRUE(back.training->history[0].has_test);
  EXPECT_FALSE(back.training->history[1].has_test);
  EXPECT_EQ(back.training->history[0].test_accuracy, 0.375);
  // The optional parts may be absent (null), and a document says so explicitly.
  RunMetadata bare = m;
  bare.model.reset();
  bare.quantization.reset();
  bare.training.reset();
  const RunMetadata bare_back = parse(to_json(bare));
  EXPECT_FALSE(bare_back.model || bare_back.quantization || bare_back.training);
}

// Every path of a JSON document to an object member, except inside `opaque` subtrees (parsed by
// their own readers: the model spec, the BitConfig).
void member_paths(const ojson& j, const std::string& path, std::vector<std::string>& out,
                  const std::vector<std::string>& opaque) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string child = path.empty() ? it.key() : path + "." + it.key();
      out.push_back(child);
      if (std::find(opaque.begin(), opaque.end(), child) == opaque.end()) member_paths(*it, child, out, opaque);
    }
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i) member_paths(j[i], path + "[" + std::to_string(i) + "]", out, opaque);
  }
}

// Splits "a.b[2].c" into the member to edit.
ojson& resolve(ojson& root, const std::string& path, std::string& last_key) {
  ojson* node = &root;
  std::size_t pos = 0;
  while (true) {
    std::size_t next = path.find_first_of(".[", pos);
    const std::string key = path.substr(pos, next - pos);
    if (next == std::string::npos) {
      last_key = key;
      return *node;
    }
    node = &(*node)[key];
    while (next < path.size() && path[next] == '[') {
      const std::size_t close = path.find(']', next);
      node = &(*node)[std::stoul(path.substr(next + 1, close - next - 1))];
      next = close + 1;
    }
    if (next >= path.size()) {
      last_key.clear();
      return *node;
    }
    pos = next + 1;
  }
}

TEST(RunMetadata, EveryMissingFieldIsAFormatErrorNamingIt) {
  const ojson doc = ojson::parse(to_json(full_metadata()));
  std::vector<std::string> paths;
  member_paths(doc, "", paths, {"model", "quantization.bit_config"});
  ASSERT_GT(paths.size(), 60u);
  for (const std::string& path : paths) {
    if (path.ends_with("]")) continue;  // array elements are not members
    ojson edited = doc;
    std::string key;
    ojson& parent = resolve(edited, path, key);
    ASSERT_TRUE(parent.is_object() && parent.contains(key)) << path;
    parent.erase(key);
    expect_format_error([&] { parse(edited.dump()); }, {std::string(kSource), "'" + path + "'"}, "without " + path);
  }
}

TEST(RunMetadata, EveryWronglyTypedFieldIsAFormatErrorNamingIt) {
  const ojson doc = ojson::parse(to_json(full_metadata()));
  std::vector<std::string> paths;
  member_paths(doc, "", paths, {"quantization.bit_config"});
  int checked = 0;
  for (const std::string& path : paths) {
    ojson edited = doc;
    std::string key;
    ojson& parent = resolve(edited, path, key);
    ojson& value = key.empty() ? parent : parent[key];
    std::vector<ojson> wrong;
    if (value.is_string()) wrong = {ojson(5)};
    else if (value.is_boolean()) wrong = {ojson("yes")};
    else if (value.is_number_integer()) wrong = {ojson("5"), ojson(0.5)};
    else if (value.is_number()) wrong = {ojson("0.5")};
    else if (value.is_array()) wrong = {ojson("[]")};
    else if (value.is_object()) wrong = {ojson::array()};
    if (path == "model.width" || path == "model.seed" || path == "model.zero_init_residual" || path == "model.shortcut")
      continue;  // optional in the model spec: checked below with the others of the spec
    const std::string named = path.starts_with("model.") ? std::string("'model'") : path;
    for (const ojson& w : wrong) {
      const ojson saved = value;
      value = w;
      expect_format_error([&] { parse(edited.dump()); }, {std::string(kSource), named}, path + " = " + w.dump());
      value = saved;
      ++checked;
    }
  }
  EXPECT_GT(checked, 80);
}

TEST(RunMetadata, RefusesValuesOutOfRange) {
  const ojson doc = ojson::parse(to_json(full_metadata()));
  const std::vector<std::pair<std::string, ojson>> cases = {
      {"data.channels", 0},           {"training.step", -1},           {"data.train_images", -3},
      {"provenance.threads", -1},     {"training.options.batch_size", 1}, {"training.epoch", 4},
      {"training.history", ojson::array()}, {"data.class_names", ojson::array({"a"})},
      {"normalization.std", ojson::array({0.0})}, {"normalization.mean", ojson::array({0.1, 0.2})},
      {"training.options.lr", 1e300}, {"training.options.seed", -1},   {"training.options.optimizer", "rmsprop"},
      {"provenance.producer", ""}};
  for (const auto& [path, value] : cases) {
    ojson edited = doc;
    std::string key;
    resolve(edited, path, key)[key] = value;
    expect_format_error([&] { parse(edited.dump()); }, {std::string(kSource), path.substr(0, path.rfind('.'))},
                        path + " = " + value.dump());
  }
}

TEST(RunMetadata, RefusesDocumentsThatAreNotMetadata) {
  const std::string good = to_json(full_metadata());
  // A syntax error is the JSON error with the file's name, not "no model".
  for (const std::string& text : {good.substr(0, good.size() / 2), std::string("{\"a\": 1,}"), std::string("")}) {
    try {
      parse(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const FormatError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("run.ckpt"), std::string::npos) << what;
      EXPECT_NE(what.find("not valid JSON"), std::string::npos) << what;
      EXPECT_EQ(what.find("\"model\" object"), std::string::npos) << what;
    }
  }
  expect_format_error([] { parse("[1, 2]"); }, {"run.ckpt", "a JSON object"}, "an array");
  // A key written twice is refused with its object's path, not read as the last value.
  std::string twice = good;
  twice.replace(twice.find("\"step\": 10"), 11, "\"step\": 10, \"step\": 11");
  expect_format_error([&] { parse(twice); }, {"run.ckpt", "\"step\" appears twice", "/training"}, "duplicate key");
  ojson doc = ojson::parse(good);
  doc["metadata_version"] = 2;
  expect_format_error([&] { parse(doc.dump()); }, {"run.ckpt", "metadata_version 2", "version 1"}, "version 2");
  doc["metadata_version"] = "1";
  expect_format_error([&] { parse(doc.dump()); }, {"run.ckpt", "metadata_version"}, "version as text");
  doc["metadata_version"] = 1;
  doc["format"] = "something else";
  expect_format_error([&] { parse(doc.dump()); }, {"run.ckpt", "format"}, "another format");
  // Without its version, a document of the current layout is not mistaken for a legacy one.
  doc = ojson::parse(good);
  doc.erase("metadata_version");
  expect_format_error([&] { parse(doc.dump()); }, {"run.ckpt", "metadata_version"}, "no version");
  // A number beyond double's range is refused (by the JSON reader or as not finite).
  std::string huge = good;
  huge.replace(huge.find("\"train_seconds\": 1.5"), 20, "\"train_seconds\": 1e400");
  expect_format_error([&] { parse(huge); }, {"run.ckpt"}, "1e400");
  // What to_json would write must be valid: validation names the field.
  RunMetadata bad = full_metadata();
  bad.normalization.stddev = {-1.0f};
  try {
    (void)to_json(bad);
    ADD_FAILURE() << "wrote a negative std";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("normalization"), std::string::npos) << e.what();
  }
}

// ---- The unversioned layout of earlier releases.

testing::LegacyTrainerRun legacy_run_from(const RunMetadata& m, Trainer& trainer) {
  testing::LegacyTrainerRun r;
  const TrainingState& t = *m.training;
  r.options = t.options;
  r.epoch = t.epoch;
  r.step = t.step;
  r.train_seconds = t.train_seconds;
  r.dataset_name = m.data.name;
  r.channels = m.data.channels;
  r.height = m.data.height;
  r.width = m.data.width;
  r.classes = m.data.classes;
  r.train_images = m.data.train_images;
  r.test_images = m.data.test_images;
  r.mean = m.normalization.mean;
  r.stddev = m.normalization.stddev;
  r.model = testing::legacy_train_model_object(*m.model, "bands", "crop-flip");
  r.groups = {{"main", {trainer.main_optimizer().describe(), trainer.main_schedule().describe()}}};
  r.history = t.history;
  return r;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("bitmix_nn_run_metadata_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(LegacyMetadata, TrainerCheckpointLoadsAndResumesExactly) {
  const data::Dataset train = testing::band_images(150, 3), test = testing::band_images(45, 4);
  const fs::path dir_a = fresh_dir("resume_a"), dir_b = fresh_dir("resume_b");
  TrainerOptions options_a;
  options_a.epochs = 3;
  options_a.batch_size = 32;
  options_a.augmentation.pad_crop = 1;
  options_a.augmentation.horizontal_flip = true;
  options_a.seed = 13;
  options_a.progress = false;
  TrainerOptions options_b = options_a;
  options_a.out_dir = dir_a;
  options_b.out_dir = dir_b;
  RunMetadata run;
  run.model = testing::tiny_resnet8_spec(7);
  auto model_a = make_model(*run.model);
  Trainer a(*model_a, train, &test, options_a);
  const std::vector<EpochStats> history_a = a.fit();

  fs::path legacy_path = dir_b / "legacy.ckpt";
  {
    auto model_b = make_model(*run.model);
    Trainer b(*model_b, train, &test, options_b);
    b.set_run_metadata(run);
    b.fit(1);
    // The same checkpoint with the metadata the earlier trainer wrote.
    Checkpoint ck = load_checkpoint(dir_b / "model.ckpt");
    ck.metadata = testing::legacy_trainer_metadata(legacy_run_from(read_run_metadata(ck, dir_b / "model.ckpt"), b));
    ASSERT_EQ(ck.metadata.find("metadata_version"), std::string::npos);
    save_checkpoint(legacy_path, ck);
  }
  const LoadedModel loaded = load_model_checkpoint(legacy_path);
  EXPECT_EQ(loaded.spec.arch, "resnet8");
  EXPECT_EQ(loaded.metadata.provenance.producer, "train");
  EXPECT_EQ(loaded.metadata.data.spec, "bands");
  EXPECT_EQ(loaded.metadata.data.train_images, 150);
  ASSERT_TRUE(loaded.metadata.training.has_value());
  EXPECT_EQ(loaded.metadata.training->groups.front().name, "main");
  EXPECT_EQ(loaded.metadata.training->groups.front().optimizer, "sgd");

  auto model_c = make_model(testing::tiny_resnet8_spec(99));
  Trainer c(*model_c, train, &test, options_b);
  c.resume(legacy_path);
  EXPECT_EQ(c.epochs_done(), 1);
  const std::vector<EpochStats> history_c = c.fit();
  ASSERT_EQ(history_c.size(), history_a.size());
  for (std::size_t i = 0; i < history_a.size(); ++i) {
    EXPECT_EQ(history_c[i].train_loss, history_a[i].train_loss) << "epoch " << i + 1;
    EXPECT_EQ(history_c[i].test_accuracy, history_a[i].test_accuracy) << "epoch " << i + 1;
  }
  const auto pa = model_a->named_parameters(), pc = model_c->named_parameters();
  for (std::size_t i = 0; i < pa.size(); ++i)
    for (int64_t k = 0; k < pa[i].parameter->value.numel(); ++k)
      ASSERT_EQ(pa[i].parameter->value[k], pc[i].parameter->value[k]) << pa[i].name;
  // Resuming rewrote the checkpoint in the current layout.
  EXPECT_NE(load_checkpoint(dir_b / "model.ckpt").metadata.find("\"metadata_version\": 1"), std::string::npos);
  fs::remove_all(dir_a);
  fs::remove_all(dir_b);
}

TEST(LegacyMetadata, QuantizedTrainRecordsItsBitConfigInTheModelObject) {
  const quant::BitConfig config = tiny_bit_config();
  testing::LegacyTrainerRun r;
  r.options.epochs = 2;
  r.dataset_name = "bands";
  r.channels = 1;
  r.height = r.width = 8;
  r.classes = 3;
  r.train_images = 30;
  r.mean = {0.3f};
  r.stddev = {0.2f};
  r.model = testing::legacy_train_model_object(testing::tiny_resnet8_spec(1), "bands", "none", &config,
                                               "--quant lsq --wbits 3 --abits 4");
  r.groups = {{"main", {R"({"kind": "sgd", "momentum": 0.9})",
                        R"({"kind": "cosine", "base_lr": 0.1, "total_steps": 2, "steps_per_epoch": 1, "warmup_steps": 0, "warmup_start_factor": 0, "min_lr": 0, "milestones": [], "gamma": 0.1})"}}};
  const RunMetadata m = parse(testing::legacy_trainer_metadata(r));
  ASSERT_TRUE(m.quantization.has_value());
  EXPECT_EQ(m.quantization->source, "--quant lsq --wbits 3 --abits 4");
  EXPECT_EQ(m.quantization->bit_config.to_json(), config.to_json());
  EXPECT_EQ(m.normalization.mean, std::vector<float>{0.3f});
  ASSERT_TRUE(m.training.has_value());
  EXPECT_EQ(m.training->epoch, 0);

  // Without its normalization it is refused, naming the field.
  ojson doc = ojson::parse(testing::legacy_trainer_metadata(r));
  doc.erase("normalization");
  expect_format_error([&] { parse(doc.dump()); }, {"run.ckpt", "'normalization'"}, "legacy without normalization");
  doc = ojson::parse(testing::legacy_trainer_metadata(r));
  doc["options"]["seed"] = "11";
  expect_format_error([&] { parse(doc.dump()); }, {"run.ckpt", "'options.seed'"}, "legacy seed as text");
  doc = ojson::parse(testing::legacy_trainer_metadata(r));
  doc["model"]["quantization"]["bit_config"]["layers"] = "none";
  expect_format_error([&] { parse(doc.dump()); }, {"run.ckpt", "model.quantization.bit_config"}, "legacy bit_config");
}

TEST(LegacyMetadata, SearchCheckpointResolvesItsBitConfigFileBesideIt) {
  const fs::path dir = fresh_dir("search");
  const quant::BitConfig config = tiny_bit_config();
  config.save(dir / "bits.json");
  const ModelSpec spec = testing::tiny_resnet8_spec(2);
  Checkpoint ck;
  ck.metadata = testing::legacy_search_metadata(testing::legacy_search_model_object(spec, "bands", "none"), {0.4f},
                                                {0.3f}, "bits.json");
  save_checkpoint(dir / "model.ckpt", ck);
  const RunMetadata m = read_run_metadata(load_checkpoint(dir / "model.ckpt"), dir / "model.ckpt");
  ASSERT_TRUE(m.quantization.has_value());
  EXPECT_EQ(m.quantization->bit_config.to_json(), config.to_json());
  EXPECT_EQ(m.provenance.producer, "search");
  EXPECT_NE(m.provenance.notes.find("ebs search"), std::string::npos) << m.provenance.notes;
  ASSERT_TRUE(m.model.has_value());
  EXPECT_EQ(m.model->seed, 0u);  // the search did not record it
  EXPECT_EQ(m.data.channels, 1);
  EXPECT_EQ(m.data.name, "bands");
  EXPECT_FALSE(m.training.has_value());

  // Without the file: refused with a message saying to pass --bits, unless the caller has its own.
  fs::remove(dir / "bits.json");
  expect_format_error([&] { read_run_metadata(ck, dir / "model.ckpt"); },
                      {(dir / "model.ckpt").string(), "'bit_config'", "bits.json", "--bits"}, "no bits.json");
  MetadataReadOptions own_bits;
  own_bits.resolve_bit_config_file = false;
  EXPECT_FALSE(read_run_metadata(ck, dir / "model.ckpt", own_bits).quantization.has_value());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace bitmix::nn
