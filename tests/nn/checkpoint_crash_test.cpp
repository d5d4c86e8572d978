// Checkpoints and training outputs under a killed writer: SIGKILL at random points of
// save_checkpoint (the file is always the complete old or the complete new checkpoint) and of a
// whole training run (whatever is on disk loads, and log.csv never lists an epoch the
// checkpoint lacks).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "bitmix/core/file_io.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "bitmix/nn/trainer.hpp"
#include "crash_test_util.hpp"
#include "tiny_task.hpp"

namespace bitmix::nn {
namespace {
namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("bitmix_nn_crash_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

Checkpoint big_checkpoint(uint64_t seed, int64_t floats) {
  Checkpoint ck;
  ck.metadata = R"({"note": "crash test )" + std::to_string(seed) + "\"}";
  Rng rng(seed);
  Tensor w({floats});
  for (int64_t i = 0; i < floats; ++i) w[i] = rng.uniform(-1.0f, 1.0f);
  ck.add(CheckpointTensorKind::parameter, "layer.weight", w);
  ck.add(CheckpointTensorKind::optimizer_state, "main/step", Tensor({1}, static_cast<float>(seed)));
  return ck;
}

TEST(CheckpointCrash, KilledSaveLeavesTheOldOrTheNewCheckpoint) {
  const fs::path dir = fresh_dir("save");
  const fs::path path = dir / "model.ckpt";
  // Of different sizes (1 and 1.5 M floats), so a mix-up of the two cannot pass as either.
  const Checkpoint cks[2] = {big_checkpoint(1, 1 << 20), big_checkpoint(2, 3 << 19)};
  const std::vector<uint8_t> versions[2] = {serialize_checkpoint(cks[0]), serialize_checkpoint(cks[1])};
  const bitmix::testing::CrashTrialStats s =
      bitmix::testing::run_crash_trials(path, versions, [&](int v) { save_checkpoint(path, cks[v]); }, 200, 7);
  EXPECT_EQ(s.trials, 200);
  EXPECT_GT(s.old_version, 0);
  EXPECT_GT(s.new_version, 0);
  // What is on disk is a checkpoint that loads (its CRC and structure check out).
  EXPECT_NO_THROW(load_checkpoint(path));
  std::cout << "[ crash    ] model.ckpt: " << s.trials << " kills: " << s.old_version << " old, " << s.new_version
            << " new, " << s.temporaries_left << " with a temporary left; child " << s.child_seconds * 1e3 << " ms\n";
  fs::remove_all(dir);
}

TrainerOptions crash_options(const fs::path& out) {
  TrainerOptions o;
  o.epochs = 6;
  o.batch_size = 32;
  o.lr = 0.05f;
  o.seed = 3;
  o.out_dir = out;
  o.progress = false;
  return o;
}

void train_and_exit(const fs::path& out) {
  const data::Dataset train = testing::band_images(96, 1), test = testing::band_images(30, 2);
  auto model = testing::tiny_resnet8(5);
  Trainer trainer(*model, train, &test, crash_options(out));
  trainer.fit();
}

// The epochs a log.csv lists; fails the test if its lines are not whole.
int logged_epochs(const std::string& csv, int trial) {
  int lines = 0;
  std::size_t start = 0;
  for (std::size_t end; (end = csv.find('\n', start)) != std::string::npos; start = end + 1, ++lines)
    if (lines > 0) {
      const std::string line = csv.substr(start, end - start);
      EXPECT_EQ(std::count(line.begin(), line.end(), ','), 6) << "trial " << trial << ": line '" << line << "'";
      EXPECT_EQ(line.substr(0, line.find(',')), std::to_string(lines)) << "trial " << trial;
    }
  EXPECT_EQ(start, csv.size()) << "trial " << trial << ": log.csv ends inside a line";
  return lines - 1;
}

TEST(CheckpointCrash, KilledTrainingLeavesConsistentOutputs) {
  const fs::path root = fresh_dir("training");
  // How long one whole run takes (the spread of the kill delays).
  const auto start = std::chrono::steady_clock::now();
  const pid_t first = ::fork();
  if (first == 0) {
    try {
      train_and_exit(root / "full");
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(first, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  const double full_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  constexpr int kTrials = 40;
  Rng rng(17);
  std::vector<int> at_epoch(7, 0);  // trials by the checkpoint's epoch (0 = none yet)
  for (int t = 0; t < kTrials; ++t) {
    const fs::path out = root / std::to_string(t);
    const pid_t pid = ::fork();
    if (pid == 0) {
      try {
        train_and_exit(out);
      } catch (...) {
        ::_exit(3);
      }
      ::_exit(0);
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(full_seconds * 1.1 * rng.uniform_double()));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    int ck_epoch = 0;
    if (fs::exists(out / "model.ckpt")) {
      const Checkpoint ck = load_checkpoint(out / "model.ckpt");  // throws (fails the test) if partial
      const RunMetadata meta = read_run_metadata(ck, out / "model.ckpt");
      ASSERT_TRUE(meta.training.has_value());
      ck_epoch = meta.training->epoch;
    }
    ++at_epoch[static_cast<std::size_t>(ck_epoch)];
    if (fs::exists(out / "log.csv")) {
      const int logged = logged_epochs(read_file_text(out / "log.csv"), t);
      EXPECT_LE(logged, ck_epoch) << "trial " << t << ": log.csv lists an epoch the checkpoint lacks";
      EXPECT_GE(logged, ck_epoch - 1) << "trial " << t;
    }
    if (fs::exists(out / "summary.json")) {
      const auto summary = nlohmann::json::parse(read_file_text(out / "summary.json"));  // throws if partial
      EXPECT_LE(summary["training"]["epoch"].get<int>(), ck_epoch) << "trial " << t;
    }
    fs::remove_all(out);
  }
  std::cout << "[ crash    ] training (" << full_seconds * 1e3 << " ms a run): " << kTrials
            << " kills, by the checkpoint's epoch:";
  for (int count : at_epoch) std::cout << ' ' << count;
  std::cout << '\n';
  // Kills landed both before the first checkpoint and after some.
  EXPECT_GT(at_epoch[0], 0);
  EXPECT_LT(at_epoch[0], kTrials);
  fs::remove_all(root);
}

}  // namespace
}  // namespace bitmix::nn
