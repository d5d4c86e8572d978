#include "bitmix/data/loader.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"

namespace bitmix::data {
namespace {

Dataset make_dataset(int64_t n, int64_t c, int64_t h, int64_t w) {
  Dataset d;
  d.name = "synthetic";
  d.channels = c;
  d.height = h;
  d.width = w;
  d.class_names = {"a", "b", "c"};
  for (int64_t i = 0; i < n; ++i) {
    d.labels.push_back(static_cast<uint8_t>(i % 3));
    for (int64_t k = 0; k < c * h * w; ++k) d.images.push_back(static_cast<uint8_t>((i * 7 + k * 13) % 256));
  }
  return d;
}

TEST(Normalization, MatchesDirectComputation) {
  const Dataset d = make_dataset(37, 3, 5, 4);
  const Normalization norm = compute_normalization(d);
  ASSERT_EQ(norm.mean.size(), 3u);
  for (int64_t c = 0; c < 3; ++c) {
    double sum = 0, sq = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < d.size(); ++i)
      for (int64_t p = 0; p < 20; ++p) {
        const double v = d.images[static_cast<std::size_t>(i * 60 + c * 20 + p)] / 255.0;
        sum += v;
        sq += v * v;
        ++count;
      }
    const double mean = sum / count;
    EXPECT_NEAR(norm.mean[c], mean, 1e-6);
    EXPECT_NEAR(norm.stddev[c], std::sqrt(sq / count - mean * mean), 1e-5);
  }
}

TEST(BatchLoader, EpochCoversEveryImageOnceAndNormalizes) {
  const Dataset d = make_dataset(50, 1, 4, 4);
  LoaderOptions options;
  options.batch_size = 16;
  options.shuffle = true;
  options.seed = 3;
  options.normalization = {{0.5f}, {0.25f}};
  BatchLoader loader(d, options);
  EXPECT_EQ(loader.num_batches(), 4);
  std::multiset<int64_t> seen;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    const Batch batch = loader.batch(b);
    EXPECT_EQ(batch.images.dim(0), b < 3 ? 16 : 2);
    for (std::size_t i = 0; i < batch.indices.size(); ++i) {
      const int64_t index = batch.indices[i];
      seen.insert(index);
      EXPECT_EQ(batch.labels[i], d.labels[static_cast<std::size_t>(index)]);
      for (int64_t p = 0; p < 16; ++p) {
        const float expected = (d.images[static_cast<std::size_t>(index * 16 + p)] / 255.0f - 0.5f) / 0.25f;
        ASSERT_FLOAT_EQ(batch.images[static_cast<int64_t>(i) * 16 + p], expected);
      }
    }
  }
  EXPECT_EQ(seen.size(), 50u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 50u);
}

TEST(BatchLoader, ShuffleDependsOnSeedAndEpochOnly) {
  const Dataset d = make_dataset(64, 1, 2, 2);
  LoaderOptions options;
  options.batch_size = 64;
  options.shuffle = true;
  options.seed = 11;
  BatchLoader a(d, options), b(d, options);
  EXPECT_EQ(a.batch(0).indices, b.batch(0).indices);
  const auto epoch0 = a.batch(0).indices;
  a.set_epoch(1);
  EXPECT_NE(a.batch(0).indices, epoch0);
  a.set_epoch(0);
  EXPECT_EQ(a.batch(0).indices, epoch0);
  options.seed = 12;
  BatchLoader c(d, options);
  EXPECT_NE(c.batch(0).indices, epoch0);
  options.shuffle = false;
  BatchLoader ordered(d, options);
  const auto in_order = ordered.batch(0).indices;
  EXPECT_TRUE(std::is_sorted(in_order.begin(), in_order.end()));
}

TEST(BatchLoader, AugmentationShiftsWithZeroPaddingAndFlips) {
  const Dataset d = make_dataset(40, 2, 6, 5);
  LoaderOptions options;
  options.batch_size = 40;
  options.augmentation = {2, true};
  options.normalization = {{0.0f, 0.0f}, {1.0f, 1.0f}};  // identity in [0, 1] units
  options.seed = 5;
  BatchLoader loader(d, options);
  const Batch batch = loader.batch(0);
  int flipped = 0, shifted = 0;
  // Each augmented image must equal the original under one of the (dy, dx, mirror) moves.
  for (int64_t i = 0; i < 40; ++i) {
    bool matched = false;
    for (int dy = -2; dy <= 2 && !matched; ++dy)
      for (int dx = -2; dx <= 2 && !matched; ++dx)
        for (int mirror = 0; mirror < 2 && !matched; ++mirror) {
          bool ok = true;
          for (int64_t c = 0; c < 2 && ok; ++c)
            for (int64_t y = 0; y < 6 && ok; ++y)
              for (int64_t x = 0; x < 5 && ok; ++x) {
                const int64_t sy = y + dy, sx = x + dx;
                const float expected = (sy < 0 || sy >= 6 || sx < 0 || sx >= 5)
                                           ? 0.0f
                                           : d.images[static_cast<std::size_t>(i * 60 + c * 30 + sy * 5 + sx)] / 255.0f;
                const int64_t ox = mirror ? 4 - x : x;
                ok = batch.images.at(i, c, y, ox) == expected;
              }
          if (ok) {
            matched = true;
            flipped += mirror;
            shifted += (dy != 0 || dx != 0);
          }
        }
    EXPECT_TRUE(matched) << "image " << i << " is not a shifted/flipped copy";
  }
  EXPECT_GT(flipped, 5);
  EXPECT_GT(shifted, 20);
}

// Whether each image of the epoch came out mirrored (no crop; the images are not symmetric).
std::vector<int> mirrored_in_epoch(const Dataset& d, LoaderOptions options, int epoch) {
  BatchLoader loader(d, options);
  loader.set_epoch(epoch);
  std::vector<int> mirrored(static_cast<std::size_t>(d.size()), -1);
  const int64_t W = d.width, plane = d.height * W;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    const Batch batch = loader.batch(b);
    for (std::size_t k = 0; k < batch.indices.size(); ++k) {
      const int64_t i = batch.indices[k];
      const uint8_t* src = d.images.data() + i * d.image_numel();
      bool same = true, mirror = true;
      for (int64_t c = 0; c < d.channels; ++c)
        for (int64_t y = 0; y < d.height; ++y)
          for (int64_t x = 0; x < W; ++x) {
            const float out = batch.images.at(static_cast<int64_t>(k), c, y, x);
            same = same && out == src[c * plane + y * W + x] / 255.0f;
            mirror = mirror && out == src[c * plane + y * W + (W - 1 - x)] / 255.0f;
          }
      EXPECT_NE(same, mirror) << "image " << i << " in epoch " << epoch;
      mirrored[static_cast<std::size_t>(i)] = mirror ? 1 : 0;
    }
  }
  return mirrored;
}

// Alternating flip: every image changes orientation from each epoch to the next, and the
// first epoch's orientations are mixed (a coin per image); random flip repeats about half.
TEST(BatchLoader, AlternatingFlipMirrorsEachImageInEveryOtherEpoch) {
  const Dataset d = make_dataset(64, 2, 4, 5);
  LoaderOptions options;
  options.batch_size = 24;
  options.shuffle = true;
  options.augmentation.horizontal_flip = true;
  options.augmentation.alternate_flip = true;
  options.normalization = {{0.0f, 0.0f}, {1.0f, 1.0f}};
  options.seed = 9;
  std::vector<std::vector<int>> epochs;
  for (int e = 0; e < 4; ++e) epochs.push_back(mirrored_in_epoch(d, options, e));
  const auto first_mirrored = std::count(epochs[0].begin(), epochs[0].end(), 1);
  EXPECT_GT(first_mirrored, 16);
  EXPECT_LT(first_mirrored, 48);
  for (int e = 1; e < 4; ++e)
    for (std::size_t i = 0; i < epochs[0].size(); ++i)
      EXPECT_NE(epochs[static_cast<std::size_t>(e)][i], epochs[static_cast<std::size_t>(e) - 1][i]) << "image " << i << " epoch " << e;

  options.augmentation.alternate_flip = false;
  const std::vector<int> random0 = mirrored_in_epoch(d, options, 0), random1 = mirrored_in_epoch(d, options, 1);
  int repeated = 0;
  for (std::size_t i = 0; i < random0.size(); ++i) repeated += random0[i] == random1[i];
  EXPECT_GT(repeated, 16);
}

TEST(BatchLoader, SameBatchesForAnyThreadCount) {
  const Dataset d = make_dataset(100, 3, 8, 8);
  LoaderOptions options;
  options.batch_size = 32;
  options.shuffle = true;
  options.augmentation = {2, true};
  options.seed = 9;
  set_num_threads(1);
  const Batch one = BatchLoader(d, options).batch(2);
  set_num_threads(2);
  const Batch two = BatchLoader(d, options).batch(2);
  set_num_threads(0);
  EXPECT_EQ(one.indices, two.indices);
  EXPECT_TRUE(std::equal(one.images.values().begin(), one.images.values().end(), two.images.values().begin()));
}

TEST(BatchLoader, DropLastAndBadOptions) {
  const Dataset d = make_dataset(50, 1, 4, 4);
  LoaderOptions options;
  options.batch_size = 16;
  options.drop_last = true;
  BatchLoader loader(d, options);
  EXPECT_EQ(loader.num_batches(), 3);
  EXPECT_EQ(loader.num_images(), 48);
  EXPECT_THROW(loader.batch(3), ArgumentError);
  options.batch_size = 0;
  EXPECT_THROW(BatchLoader(d, options), ArgumentError);
  options.batch_size = 4;
  options.augmentation.pad_crop = 4;
  EXPECT_THROW(BatchLoader(d, options), ArgumentError);
  options.augmentation.pad_crop = 0;
  options.normalization = {{0.5f, 0.5f}, {1.0f, 1.0f}};
  EXPECT_THROW(BatchLoader(d, options), ArgumentError);
  options.normalization = {{0.5f}, {0.0f}};
  EXPECT_THROW(BatchLoader(d, options), ArgumentError);
  EXPECT_THROW(d.slice(40, 20), ArgumentError);
  EXPECT_EQ(d.slice(10, 5).size(), 5);
}

}  // namespace
}  // namespace bitmix::data
