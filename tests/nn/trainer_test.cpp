// The training loop on a small synthetic dataset: it learns, a resumed run reproduces an
// uninterrupted one bit for bit, a non-finite loss stops it with the last good checkpoint left
// intact, and the extension points (extra loss, parameter groups, callbacks) work.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/trainer.hpp"
#include "tiny_task.hpp"

namespace bitmix::nn {
namespace {

TrainerOptions small_options(const std::filesystem::path& out) {
  TrainerOptions o;
  o.epochs = 3;
  o.batch_size = 32;
  o.lr = 0.1f;
  o.weight_decay = 1e-4f;
  o.warmup_epochs = 0.5f;
  o.augmentation.pad_crop = 1;
  o.augmentation.horizontal_flip = true;
  o.seed = 11;
  o.out_dir = out;
  o.progress = false;
  return o;
}

std::filesystem::path fresh_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("bitmix_nn_trainer_" + name);
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(Trainer, LearnsASimpleTaskAndWritesOutputs) {
  const data::Dataset train = testing::band_images(300, 1), test = testing::band_images(90, 2);
  auto model = testing::tiny_resnet8(5);
  const auto dir = fresh_dir("learns");
  TrainerOptions o = small_options(dir);
  o.epochs = 4;
  Trainer trainer(*model, train, &test, o);
  std::vector<int> seen_epochs;
  trainer.add_epoch_callback([&](const EpochStats& s) { seen_epochs.push_back(s.epoch); });
  const std::vector<EpochStats>& history = trainer.fit();
  ASSERT_EQ(history.size(), 4u);
  EXPECT_EQ(seen_epochs, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_LT(history.back().train_loss, history.front().train_loss);
  EXPECT_GT(history.back().test_accuracy, 0.9) << "test accuracy " << history.back().test_accuracy;
  EXPECT_GT(trainer.evaluate(test).accuracy, 0.9);

  const std::string csv = read_file_text(dir / "log.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5);
  const auto summary = nlohmann::json::parse(read_file_text(dir / "summary.json"));
  EXPECT_TRUE(summary.at("finished").get<bool>());
  EXPECT_EQ(summary.at("training").at("epoch").get<int>(), 4);
  EXPECT_EQ(summary.at("data").at("name").get<std::string>(), "bands");
  EXPECT_EQ(summary.at("normalization").at("mean").size(), 1u);
  const Checkpoint ck = load_checkpoint(dir / "model.ckpt");
  EXPECT_NE(ck.find(CheckpointTensorKind::parameter, "layer1.0.conv1.weight"), nullptr);
  EXPECT_NE(ck.find(CheckpointTensorKind::buffer, "bn1.running_mean"), nullptr);
  EXPECT_NE(ck.find(CheckpointTensorKind::optimizer_state, "main/fc.weight.momentum"), nullptr);
  std::filesystem::remove_all(dir);
}

// The test-time view (dy, dx, mirror) of every image, made independently of the trainer on the
// stored pixels: out(y, x) = in(y + dy, x + dx), pixel 0 outside, then mirrored.
data::Dataset test_time_view(const data::Dataset& d, int dy, int dx, bool mirror) {
  data::Dataset out = d;
  const int64_t H = d.height, W = d.width;
  for (int64_t plane = 0; plane < d.size() * d.channels; ++plane) {
    const uint8_t* src = d.images.data() + plane * H * W;
    uint8_t* dst = out.images.data() + plane * H * W;
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sy = y + dy, sx = (mirror ? W - 1 - x : x) + dx;
        dst[y * W + x] = sy < 0 || sy >= H || sx < 0 || sx >= W ? uint8_t{0} : src[sy * W + sx];
      }
  }
  return out;
}

struct TtaCase {
  bool flip;
  int shift;
};

class TestTimeAugmentation : public ::testing::TestWithParam<TtaCase> {};

// Test-time augmentation classifies each image by the mean logits of its views: checked against
// views made independently on the stored pixels (test_time_view), for the flip, the shifts and
// both together.
TEST_P(TestTimeAugmentation, ClassifiesByTheMeanLogitsOfIndependentlyMadeViews) {
  const TtaCase tc = GetParam();
  const data::Dataset train = testing::band_images(120, 1), test = testing::band_images(40, 2);
  auto model = testing::tiny_resnet8(3);
  TrainerOptions o = small_options({});
  o.epochs = 1;
  o.progress = false;
  o.eval_flip = tc.flip;
  o.eval_shift = tc.shift;
  o.eval_batch_size = 16;  // three batches, the last one partial
  Trainer trainer(*model, train, nullptr, o);
  trainer.fit();
  const EvalResult augmented = trainer.evaluate(test);

  std::vector<std::pair<int, int>> shifts{{0, 0}};
  if (tc.shift > 0) shifts.insert(shifts.end(), {{tc.shift, tc.shift}, {-tc.shift, -tc.shift}});
  data::LoaderOptions lo;
  lo.batch_size = 40;
  lo.normalization = trainer.normalization();
  model->eval();
  Tensor mean;
  double single_view_loss = 0;
  std::vector<int> labels;
  int views = 0;
  for (const auto& [dy, dx] : shifts)
    for (int mirror = 0; mirror < (tc.flip ? 2 : 1); ++mirror) {
      data::Batch batch;
      data::BatchLoader(test_time_view(test, dy, dx, mirror == 1), lo).fill_batch(0, batch);
      const Tensor& logits = model->forward(batch.images);
      labels = batch.labels;
      if (views == 0) {
        mean = logits;
        single_view_loss = softmax_cross_entropy(logits, batch.labels, 0.0f, nullptr).loss;
      } else {
        for (int64_t i = 0; i < mean.numel(); ++i) mean.data()[i] += logits.data()[i];
      }
      ++views;
    }
  ASSERT_EQ(views, (tc.flip ? 2 : 1) * (tc.shift > 0 ? 3 : 1));
  for (int64_t i = 0; i < mean.numel(); ++i) mean.data()[i] /= static_cast<float>(views);
  const CrossEntropyResult expected = softmax_cross_entropy(mean, labels, 0.0f, nullptr);

  EXPECT_EQ(augmented.images, 40);
  EXPECT_NEAR(augmented.loss, expected.loss, 1e-5);
  EXPECT_DOUBLE_EQ(augmented.accuracy, static_cast<double>(expected.correct) / 40.0);
  EXPECT_GT(std::abs(single_view_loss - expected.loss), 1e-4) << "the extra views must change the logits";
}

INSTANTIATE_TEST_SUITE_P(Views, TestTimeAugmentation,
                         ::testing::Values(TtaCase{true, 0}, TtaCase{false, 1}, TtaCase{true, 1}, TtaCase{true, 2}),
                         [](const ::testing::TestParamInfo<TtaCase>& param_info) {
                           return std::string(param_info.param.flip ? "Flip" : "NoFlip") + "Shift" +
                                  std::to_string(param_info.param.shift);
                         });

TEST(Trainer, RejectsATestTimeShiftAsWideAsTheImage) {
  const data::Dataset train = testing::band_images(40, 1);
  auto model = testing::tiny_resnet8(3);
  TrainerOptions o = small_options({});
  o.eval_shift = static_cast<int>(train.width);
  EXPECT_THROW(Trainer(*model, train, nullptr, o), ArgumentError);
  o.eval_shift = -1;
  EXPECT_THROW(Trainer(*model, train, nullptr, o), ArgumentError);
}

// With weight averaging (ema_decay > 0) too: the averages and the trained weights both come back.
class Resume : public ::testing::TestWithParam<float> {};

TEST_P(Resume, ResumedRunMatchesUninterruptedRunExactly) {
  const data::Dataset train = testing::band_images(200, 3), test = testing::band_images(60, 4);
  const auto dir_a = fresh_dir("resume_a"), dir_b = fresh_dir("resume_b");
  TrainerOptions options_a = small_options(dir_a), options_b = small_options(dir_b);
  options_a.ema_decay = options_b.ema_decay = GetParam();
  auto model_a = testing::tiny_resnet8(7);
  Trainer a(*model_a, train, &test, options_a);
  const std::vector<EpochStats> history_a = a.fit();

  {
    auto model_b = testing::tiny_resnet8(7);
    Trainer b(*model_b, train, &test, options_b);
    b.fit(1);  // the job stops after one epoch
    EXPECT_EQ(b.epochs_done(), 1);
  }
  auto model_c = testing::tiny_resnet8(99);  // different initial weights: everything must come from the checkpoint
  Trainer c(*model_c, train, &test, options_b);
  c.resume(dir_b / "model.ckpt");
  EXPECT_EQ(c.epochs_done(), 1);
  EXPECT_EQ(c.steps_done(), c.batches_per_epoch());
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
  const auto ba = model_a->named_buffers(), bc = model_c->named_buffers();
  for (std::size_t i = 0; i < ba.size(); ++i)
    for (int64_t k = 0; k < ba[i].buffer->value.numel(); ++k) ASSERT_EQ(ba[i].buffer->value[k], bc[i].buffer->value[k]);

  // The checkpoints agree too (with averaging: the averages in the model entries, the trained
  // weights under live/).
  const Checkpoint ck_a = load_checkpoint(dir_a / "model.ckpt"), ck_c = load_checkpoint(dir_b / "model.ckpt");
  ASSERT_EQ(ck_a.entries.size(), ck_c.entries.size());
  for (std::size_t i = 0; i < ck_a.entries.size(); ++i) {
    ASSERT_EQ(ck_a.entries[i].name, ck_c.entries[i].name);
    for (int64_t k = 0; k < ck_a.entries[i].value.numel(); ++k)
      ASSERT_EQ(ck_a.entries[i].value[k], ck_c.entries[i].value[k]) << ck_a.entries[i].name;
  }

  // Resuming with another seed would not continue the same run: refused.
  TrainerOptions other = options_b;
  other.seed = 12;
  auto model_d = testing::tiny_resnet8(7);
  Trainer d(*model_d, train, &test, other);
  EXPECT_THROW(d.resume(dir_b / "model.ckpt"), ArgumentError);
  // So would another dataset.
  const data::Dataset smaller = testing::band_images(150, 3);
  auto model_e = testing::tiny_resnet8(7);
  Trainer e(*model_e, smaller, &test, options_b);
  EXPECT_THROW(e.resume(dir_b / "model.ckpt"), ArgumentError);
  // So would switching weight averaging on or off.
  TrainerOptions toggled = options_b;
  toggled.ema_decay = GetParam() > 0.0f ? 0.0f : 0.9f;
  auto model_f = testing::tiny_resnet8(7);
  Trainer f(*model_f, train, &test, toggled);
  EXPECT_THROW(f.resume(dir_b / "model.ckpt"), ArgumentError);
  if (GetParam() > 0.0f) {
    // An averaged run's checkpoint without one of its trained values cannot be resumed.
    Checkpoint damaged = load_checkpoint(dir_b / "model.ckpt");
    const auto live = std::find_if(damaged.entries.begin(), damaged.entries.end(),
                                   [](const CheckpointEntry& entry) { return entry.name.starts_with("live/"); });
    ASSERT_NE(live, damaged.entries.end());
    const std::string missing = live->name;
    damaged.entries.erase(live);
    save_checkpoint(dir_b / "damaged.ckpt", damaged);
    auto model_g = testing::tiny_resnet8(7);
    Trainer g(*model_g, train, &test, options_b);
    try {
      g.resume(dir_b / "damaged.ckpt");
      FAIL() << "expected FormatError";
    } catch (const FormatError& error) {
      EXPECT_NE(std::string(error.what()).find(missing), std::string::npos) << error.what();
    }
  }
  std::filesystem::remove_all(dir_a);
  std::filesystem::remove_all(dir_b);
}

INSTANTIATE_TEST_SUITE_P(WeightAveraging, Resume, ::testing::Values(0.0f, 0.9f),
                         [](const ::testing::TestParamInfo<float>& param_info) {
                           return param_info.param > 0.0f ? std::string("Averaged") : std::string("Plain");
                         });

// The weight average follows its definition: recomputed here in double precision from the
// weights seen at every step (parameters before each step, BatchNorm statistics after each
// forward pass), it matches the model entries of the checkpoint; evaluate() measures it; the
// trained weights stay in the model and are saved under live/.
TEST(Trainer, WeightAverageIsTheExponentialMovingAverageOfTheTrainedWeights) {
  const data::Dataset train = testing::band_images(96, 12), test = testing::band_images(45, 13);
  const auto dir = fresh_dir("ema");
  auto model = testing::tiny_resnet8(4);
  TrainerOptions o = small_options(dir);
  o.epochs = 2;
  o.ema_decay = 0.8f;
  const std::string param_name = "layer1.0.conv1.weight", buffer_name = "bn1.running_mean";
  Parameter* param = nullptr;
  Buffer* buffer = nullptr;
  for (const NamedParameter& p : model->named_parameters())
    if (p.name == param_name) param = p.parameter;
  for (const NamedBuffer& b : model->named_buffers())
    if (b.name == buffer_name) buffer = b.buffer;
  ASSERT_NE(param, nullptr);
  ASSERT_NE(buffer, nullptr);
  auto as_double = [](const Tensor& t) { return std::vector<double>(t.data(), t.data() + t.numel()); };
  std::vector<double> param_avg = as_double(param->value), buffer_avg = as_double(buffer->value);
  int64_t step = 0;
  auto fold = [&](std::vector<double>& avg, const std::vector<double>& value, int64_t t) {
    const double d = std::min(0.8, (1.0 + static_cast<double>(t)) / (10.0 + static_cast<double>(t)));
    for (std::size_t i = 0; i < avg.size(); ++i) avg[i] = d * avg[i] + (1.0 - d) * value[i];
  };
  Trainer trainer(*model, train, nullptr, o);
  // Called after each backward pass of step + 1: the parameter is what the average took in
  // after `step` steps, and the statistics already include this step's forward pass, i.e. what
  // the average takes in after step + 1.
  trainer.set_extra_loss([&] {
    if (step > 0) fold(param_avg, as_double(param->value), step);
    ++step;
    fold(buffer_avg, as_double(buffer->value), step);
    return 0.0;
  });
  trainer.fit();
  ASSERT_EQ(step, 2 * trainer.batches_per_epoch());
  fold(param_avg, as_double(param->value), step);  // the last step's result

  const Checkpoint ck = load_checkpoint(dir / "model.ckpt");
  const CheckpointEntry* saved_param = ck.find(CheckpointTensorKind::parameter, param_name);
  const CheckpointEntry* saved_buffer = ck.find(CheckpointTensorKind::buffer, buffer_name);
  const CheckpointEntry* live_param = ck.find(CheckpointTensorKind::extra, "live/" + param_name);
  ASSERT_NE(saved_param, nullptr);
  ASSERT_NE(saved_buffer, nullptr);
  ASSERT_NE(live_param, nullptr);
  double largest_gap = 0;  // between the average and the trained weights: the test must be able to tell them apart
  for (std::size_t i = 0; i < param_avg.size(); ++i) {
    EXPECT_NEAR(saved_param->value[static_cast<int64_t>(i)], param_avg[i], 1e-5 + 1e-4 * std::abs(param_avg[i])) << i;
    EXPECT_EQ(live_param->value[static_cast<int64_t>(i)], param->value[static_cast<int64_t>(i)]) << i;
    largest_gap = std::max(largest_gap, std::abs(param_avg[i] - double{param->value[static_cast<int64_t>(i)]}));
  }
  EXPECT_GT(largest_gap, 1e-3);
  for (std::size_t i = 0; i < buffer_avg.size(); ++i)
    EXPECT_NEAR(saved_buffer->value[static_cast<int64_t>(i)], buffer_avg[i], 1e-5 + 1e-4 * std::abs(buffer_avg[i])) << i;

  // evaluate() measures the average, and leaves the trained weights in the model.
  const std::vector<double> trained = as_double(param->value);
  const EvalResult averaged = trainer.evaluate(test);
  EXPECT_EQ(as_double(param->value), trained);
  auto reloaded = testing::tiny_resnet8(0);
  load_model_state(*reloaded, ck);
  TrainerOptions plain = small_options({});
  Trainer reference(*reloaded, train, nullptr, plain);
  const EvalResult expected = reference.evaluate(test);
  EXPECT_DOUBLE_EQ(averaged.loss, expected.loss);
  EXPECT_DOUBLE_EQ(averaged.accuracy, expected.accuracy);
  std::filesystem::remove_all(dir);
}

TEST(Trainer, RejectsAWeightAverageDecayOutsideZeroToOne) {
  const data::Dataset train = testing::band_images(40, 1);
  auto model = testing::tiny_resnet8(3);
  TrainerOptions o = small_options({});
  for (float decay : {-0.1f, 1.0f, std::nanf("")}) {
    o.ema_decay = decay;
    EXPECT_THROW(Trainer(*model, train, nullptr, o), ArgumentError) << decay;
  }
}

TEST(Trainer, NonFiniteLossStopsAndKeepsTheLastGoodCheckpoint) {
  const data::Dataset train = testing::band_images(96, 5);
  const auto dir = fresh_dir("nan");
  auto model = testing::tiny_resnet8(1);
  Trainer trainer(*model, train, nullptr, small_options(dir));
  const int64_t per_epoch = trainer.batches_per_epoch();
  int64_t calls = 0;
  trainer.set_extra_loss([&] { return ++calls > per_epoch + 1 ? std::nan("") : 0.0; });
  try {
    trainer.fit();
    FAIL() << "expected NonFiniteLossError";
  } catch (const NonFiniteLossError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("epoch 2"), std::string::npos) << what;
    EXPECT_NE(what.find("last good checkpoint"), std::string::npos) << what;
  }
  const RunMetadata meta = read_run_metadata(load_checkpoint(dir / "model.ckpt"), dir / "model.ckpt");
  ASSERT_TRUE(meta.training.has_value());
  EXPECT_EQ(meta.training->epoch, 1);
  std::filesystem::remove_all(dir);
}

// An extra loss term on a parameter outside the model, optimized by its own Adam group: the
// search's complexity penalty and strengths follow this pattern.
TEST(Trainer, ExtraLossAndParameterGroup) {
  const data::Dataset train = testing::band_images(96, 6);
  auto model = testing::tiny_resnet8(2);
  Parameter strength("strength", Tensor({1}, 0.0f));
  TrainerOptions o = small_options({});
  o.epochs = 2;
  Trainer trainer(*model, train, nullptr, o);
  LrScheduleOptions so;
  so.kind = ScheduleKind::constant;
  so.base_lr = 0.05f;
  trainer.add_parameter_group("strengths", std::make_unique<Adam>(std::vector<NamedParameter>{{"strength", &strength}}, AdamOptions{}),
                              LrSchedule(so));
  trainer.set_extra_loss([&] {
    const float s = strength.value[0];
    strength.grad[0] += 2.0f * (s - 3.0f);
    return double{(s - 3.0f) * (s - 3.0f)};
  });
  const auto history = trainer.fit();
  EXPECT_GT(strength.value[0], 0.2f);  // Adam moves it by about lr per step toward 3
  EXPECT_GT(history.front().extra_loss, history.back().extra_loss);
  for (const NamedParameter& p : trainer.main_optimizer().parameters()) EXPECT_NE(p.parameter, &strength);
}

TEST(Trainer, RejectsAModelThatDoesNotFitTheData) {
  const data::Dataset train = testing::band_images(30, 7);
  ModelSpec spec;  // 3 channels, 10 classes
  spec.arch = "resnet8";
  spec.width = 4;
  auto model = make_model(spec);
  try {
    Trainer trainer(*model, train, nullptr, small_options({}));
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("conv1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bitmix::nn

namespace bitmix::nn {
namespace {

// A trainer checkpoint rebuilds its own model (architecture from the metadata, weights,
// normalization): what the search and the deployment compiler start from.
TEST(Trainer, CheckpointRebuildsTheModel) {
  const data::Dataset train = testing::band_images(64, 8);
  const auto dir = fresh_dir("rebuild");
  ModelSpec spec = testing::tiny_resnet8_spec(0);
  spec.shortcut = ShortcutOption::B;
  auto model = make_model(spec);
  TrainerOptions o = small_options(dir);
  o.epochs = 1;
  Trainer trainer(*model, train, nullptr, o);
  RunMetadata run;
  run.model = spec;
  trainer.set_run_metadata(run);
  trainer.fit();
  const LoadedModel loaded = load_model_checkpoint(dir / "model.ckpt");
  EXPECT_EQ(loaded.spec.arch, "resnet8");
  EXPECT_EQ(loaded.spec.shortcut, ShortcutOption::B);
  ASSERT_EQ(loaded.metadata.normalization.mean.size(), 1u);
  EXPECT_EQ(loaded.metadata.normalization.mean[0], trainer.normalization().mean[0]);
  // The rest of the run's description: the data, the producer and the training state.
  EXPECT_EQ(loaded.metadata.data.name, "bands");
  EXPECT_EQ(loaded.metadata.data.train_images, 64);
  EXPECT_EQ(loaded.metadata.data.class_names, train.class_names);
  EXPECT_EQ(loaded.metadata.provenance.producer, "train");
  EXPECT_FALSE(loaded.metadata.quantization.has_value());
  ASSERT_TRUE(loaded.metadata.training.has_value());
  EXPECT_EQ(loaded.metadata.training->epoch, 1);
  EXPECT_EQ(loaded.metadata.training->step, trainer.steps_done());
  ASSERT_EQ(loaded.metadata.training->history.size(), 1u);
  EXPECT_EQ(loaded.metadata.training->history[0].train_loss, trainer.history()[0].train_loss);
  ASSERT_EQ(loaded.metadata.training->groups.size(), 1u);
  EXPECT_EQ(loaded.metadata.training->groups[0].schedule.total_steps, trainer.main_schedule().options().total_steps);
  // A checkpoint that is not a trainer's has nothing to resume: refused, naming the field.
  Checkpoint plain = loaded.checkpoint;
  RunMetadata described = loaded.metadata;
  described.training.reset();
  described.provenance.producer = "import";
  set_run_metadata(plain, described);
  save_checkpoint(dir / "plain.ckpt", plain);
  auto other = make_model(spec);
  Trainer resumed(*other, train, nullptr, o);
  try {
    resumed.resume(dir / "plain.ckpt");
    FAIL() << "resumed a checkpoint without training state";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'training'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("plain.ckpt"), std::string::npos) << e.what();
  }
  const auto a = model->named_parameters(), b = loaded.model->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    for (int64_t k = 0; k < a[i].parameter->value.numel(); ++k)
      ASSERT_EQ(a[i].parameter->value[k], b[i].parameter->value[k]) << a[i].name;
  EXPECT_THROW(model_spec_from_json(R"({"arch": "resnet20"})"), FormatError);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace bitmix::nn
