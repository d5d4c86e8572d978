// A stop request (what SIGINT/SIGTERM set through bitmix/core/interrupt.hpp) stops training at
// the next step boundary with a complete checkpoint, and resuming from it gives exactly the
// checkpoint and history of an uninterrupted run: mid-epoch, at an epoch boundary, with and
// without weight averaging.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "bitmix/core/error.hpp"
#include "bitmix/core/interrupt.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "bitmix/nn/trainer.hpp"
#include "tiny_task.hpp"

namespace bitmix::nn {
namespace {
namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("bitmix_nn_interrupt_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  return dir;
}

TrainerOptions options(const fs::path& out, float ema) {
  TrainerOptions o;
  o.epochs = 3;
  o.batch_size = 32;
  o.lr = 0.1f;
  o.warmup_epochs = 0.5f;
  o.augmentation.pad_crop = 1;
  o.augmentation.horizontal_flip = true;
  o.ema_decay = ema;
  o.seed = 11;
  o.out_dir = out;
  o.progress = false;
  return o;
}

void expect_same_checkpoints(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.entries.size(), b.entries.size());
  for (std::size_t i = 0; i < a.entries.size(); ++i) {
    ASSERT_EQ(a.entries[i].name, b.entries[i].name);
    ASSERT_EQ(a.entries[i].value.shape(), b.entries[i].value.shape()) << a.entries[i].name;
    for (int64_t k = 0; k < a.entries[i].value.numel(); ++k)
      ASSERT_EQ(a.entries[i].value[k], b.entries[i].value[k]) << a.entries[i].name << "[" << k << "]";
  }
}

// (stop before step, weight-average decay); 200 images in batches of 32 = 7 batches an epoch.
class Interrupt : public ::testing::TestWithParam<std::tuple<int, float>> {
 protected:
  void TearDown() override { clear_stop_request(); }
};

TEST_P(Interrupt, ResumedRunMatchesUninterruptedRunExactly) {
  // (Not a structured binding: Clang 14 cannot capture one in a lambda.)
  const int stop_step = std::get<0>(GetParam());
  const float ema = std::get<1>(GetParam());
  const data::Dataset train = testing::band_images(200, 3), test = testing::band_images(60, 4);
  const fs::path dir_a = fresh_dir("a"), dir_b = fresh_dir("b");
  // The hook runs inside every step (after the backward pass): the reference run has it too.
  auto model_a = testing::tiny_resnet8(7);
  Trainer a(*model_a, train, &test, options(dir_a, ema));
  a.set_extra_loss([] { return 0.0; });
  const std::vector<EpochStats> history_a = a.fit();

  {
    auto model_b = testing::tiny_resnet8(7);
    Trainer b(*model_b, train, &test, options(dir_b, ema));
    b.set_extra_loss([&] {
      if (b.steps_done() + 1 == stop_step) request_stop(SIGTERM);  // arrives during step stop_step
      return 0.0;
    });
    try {
      b.fit();
      FAIL() << "the stop request was ignored";
    } catch (const TrainingInterrupted& e) {
      EXPECT_EQ(e.signal(), SIGTERM);
      EXPECT_EQ(e.checkpoint(), dir_b / "model.ckpt");
      EXPECT_NE(std::string(e.what()).find("SIGTERM"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find((dir_b / "model.ckpt").string()), std::string::npos) << e.what();
    }
    EXPECT_EQ(b.steps_done(), stop_step) << "the step in progress completes, no further one starts";
    clear_stop_request();
    const RunMetadata meta = read_run_metadata(load_checkpoint(dir_b / "model.ckpt"), dir_b / "model.ckpt");
    ASSERT_TRUE(meta.training.has_value());
    EXPECT_EQ(meta.training->step, stop_step);
    const int64_t batches = b.batches_per_epoch();
    EXPECT_EQ(meta.training->epoch, stop_step / batches);
    EXPECT_EQ(meta.training->partial.has_value(), stop_step % batches != 0);
    if (meta.training->partial) {
      EXPECT_EQ(meta.training->partial->batches, stop_step % batches);
    }
  }
  auto model_c = testing::tiny_resnet8(99);  // other initial weights: everything must come from the checkpoint
  Trainer c(*model_c, train, &test, options(dir_b, ema));
  c.set_extra_loss([] { return 0.0; });
  c.resume(dir_b / "model.ckpt");
  EXPECT_EQ(c.steps_done(), stop_step);
  const std::vector<EpochStats> history_c = c.fit();
  ASSERT_EQ(history_c.size(), history_a.size());
  for (std::size_t i = 0; i < history_a.size(); ++i) {
    EXPECT_EQ(history_c[i].lr, history_a[i].lr) << "epoch " << i + 1;
    EXPECT_EQ(history_c[i].train_loss, history_a[i].train_loss) << "epoch " << i + 1;
    EXPECT_EQ(history_c[i].train_accuracy, history_a[i].train_accuracy) << "epoch " << i + 1;
    EXPECT_EQ(history_c[i].test_loss, history_a[i].test_loss) << "epoch " << i + 1;
  }
  expect_same_checkpoints(load_checkpoint(dir_a / "model.ckpt"), load_checkpoint(dir_b / "model.ckpt"));
  fs::remove_all(dir_a);
  fs::remove_all(dir_b);
}

INSTANTIATE_TEST_SUITE_P(StopPoints, Interrupt,
                         ::testing::Combine(::testing::Values(1, 5, 7, 12), ::testing::Values(0.0f, 0.9f)),
                         [](const ::testing::TestParamInfo<std::tuple<int, float>>& param_info) {
                           return "Step" + std::to_string(std::get<0>(param_info.param)) +
                                  (std::get<1>(param_info.param) > 0.0f ? "Averaged" : "Plain");
                         });

TEST(Interrupt, WithoutAnOutputDirectoryNothingIsWritten) {
  const data::Dataset train = testing::band_images(64, 3);
  auto model = testing::tiny_resnet8(7);
  Trainer t(*model, train, nullptr, options({}, 0.0f));
  request_stop(SIGINT);
  try {
    t.fit();
    FAIL() << "expected TrainingInterrupted";
  } catch (const TrainingInterrupted& e) {
    EXPECT_EQ(e.signal(), SIGINT);
    EXPECT_TRUE(e.checkpoint().empty());
    EXPECT_NE(std::string(e.what()).find("nothing was saved"), std::string::npos) << e.what();
  }
  clear_stop_request();
  EXPECT_EQ(t.steps_done(), 0);
}

TEST(Interrupt, APartialEpochFromAnotherRunIsRefused) {
  // A checkpoint whose step does not match its epoch and batch (5 batches into epoch 1 is step 5)
  // cannot be resumed: it is not the run this trainer would continue.
  const data::Dataset train = testing::band_images(200, 3);
  const fs::path dir = fresh_dir("refused");
  {
    auto model = testing::tiny_resnet8(7);
    Trainer t(*model, train, nullptr, options(dir, 0.0f));
    t.set_extra_loss([&] {
      if (t.steps_done() + 1 == 5) request_stop(SIGINT);
      return 0.0;
    });
    EXPECT_THROW(t.fit(), TrainingInterrupted);
    clear_stop_request();
  }
  Checkpoint ck = load_checkpoint(dir / "model.ckpt");
  RunMetadata meta = read_run_metadata(ck, dir / "model.ckpt");
  meta.training->step = 6;  // as if the checkpoint lied about its step
  set_run_metadata(ck, meta);
  save_checkpoint(dir / "edited.ckpt", ck);
  auto model = testing::tiny_resnet8(7);
  Trainer t(*model, train, nullptr, options(dir, 0.0f));
  try {
    t.resume(dir / "edited.ckpt");
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("step 6"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace bitmix::nn
