// .bmx models under a killed writer: SIGKILL at random points of Model::save, after which the
// file on disk is always the complete old or the complete new model (and loads as such).
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <unistd.h>

#include "bitmix/core/file_io.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/runtime/model.hpp"
#include "crash_test_util.hpp"
#include "runtime_test_util.hpp"

namespace bitmix::runtime {
namespace {
namespace fs = std::filesystem;

// A model with about a megabyte of weights, so a write takes long enough for kills to land in it.
Model big_model(uint64_t seed, int64_t out_channels) {
  Rng rng(seed);
  ModelInfo info;
  info.name = "crash-net-" + std::to_string(seed);
  info.architecture = "test";
  info.input_shape = {128, 4, 4};
  info.mean.assign(128, 0.5f);
  info.stddev.assign(128, 0.25f);
  testing::TestModel tm;
  ModelBuilder b(info);
  QuantizeParams q0;
  q0.quant = kernels::ActivationQuant{8, 0.03f, 128, true};
  q0.border = 1;
  q0.normalize = true;
  const int32_t x = b.quantize("input", b.input(), q0);
  testing::ConvSpecForTest conv;
  conv.out = out_channels;
  conv.bits = 8;
  conv.scale = 0.001f;
  const int32_t c = testing::add_conv(b, tm, rng, "conv", x, conv);
  const int32_t avg = b.global_avg_pool("avgpool", c);
  QuantizeParams q1;
  q1.quant = testing::random_quant(rng, 8, 0.01f);
  const int32_t y = b.quantize("fc.input", avg, q1);
  testing::ConvSpecForTest fc;
  fc.out = 10;
  fc.kernel = 1;
  fc.pad = 0;
  fc.bits = 8;
  fc.relu = false;
  return b.finish(testing::add_conv(b, tm, rng, "fc", y, fc, /*linear=*/true));
}

TEST(ModelIoCrash, KilledSaveLeavesTheOldOrTheNewModel) {
  const fs::path dir = fs::temp_directory_path() / ("bitmix_runtime_crash_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const fs::path path = dir / "model.bmx";
  const Model models[2] = {big_model(1, 512), big_model(2, 768)};
  const std::vector<uint8_t> versions[2] = {models[0].serialize(), models[1].serialize()};
  ASSERT_GT(versions[0].size(), 500000u);
  const bitmix::testing::CrashTrialStats s =
      bitmix::testing::run_crash_trials(path, versions, [&](int v) { models[v].save(path); }, 200, 5);
  EXPECT_EQ(s.trials, 200);
  EXPECT_GT(s.old_version, 0);
  EXPECT_GT(s.new_version, 0);
  const Model loaded = Model::load(path);
  EXPECT_TRUE(loaded.info().name == "crash-net-1" || loaded.info().name == "crash-net-2") << loaded.info().name;
  std::cout << "[ crash    ] model.bmx: " << s.trials << " kills: " << s.old_version << " old, " << s.new_version
            << " new, " << s.temporaries_left << " with a temporary left; child " << s.child_seconds * 1e3 << " ms\n";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace bitmix::runtime
