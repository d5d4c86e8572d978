#include "bitmix/data/loader.hpp"

#include <fmt/format.h>

#include <cmath>
#include <numeric>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "core/float_ops.hpp"

namespace bitmix::data {

Normalization compute_normalization(const Dataset& dataset) {
  const int64_t channels = dataset.channels;
  const int64_t plane = dataset.height * dataset.width;
  if (dataset.size() == 0 || channels == 0 || plane == 0)
    throw ArgumentError(fmt::format("{}: cannot compute normalization statistics of an empty dataset", dataset.name));
  // Per-thread integer sums are exact, so the result does not depend on the thread count.
  const int threads = num_threads();
  std::vector<std::vector<uint64_t>> sums(static_cast<std::size_t>(threads), std::vector<uint64_t>(channels, 0));
  std::vector<std::vector<uint64_t>> squares = sums;
  parallel_run([&](int thread_index, int thread_count) {
    const int64_t begin = dataset.size() * thread_index / thread_count;
    const int64_t end = dataset.size() * (thread_index + 1) / thread_count;
    auto& sum = sums[static_cast<std::size_t>(thread_index)];
    auto& square = squares[static_cast<std::size_t>(thread_index)];
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t* image = dataset.images.data() + i * dataset.image_numel();
      for (int64_t c = 0; c < channels; ++c) {
        uint64_t s = 0, q = 0;
        for (int64_t p = 0; p < plane; ++p) {
          const uint64_t v = image[c * plane + p];
          s += v;
          q += v * v;
        }
        sum[static_cast<std::size_t>(c)] += s;
        square[static_cast<std::size_t>(c)] += q;
      }
    }
  });
  Normalization norm;
  const double count = static_cast<double>(dataset.size() * plane);
  for (int64_t c = 0; c < channels; ++c) {
    uint64_t s = 0, q = 0;
    for (int t = 0; t < threads; ++t) {
      s += sums[static_cast<std::size_t>(t)][static_cast<std::size_t>(c)];
      q += squares[static_cast<std::size_t>(t)][static_cast<std::size_t>(c)];
    }
    const double mean = static_cast<double>(s) / count / 255.0;
    const double var = static_cast<double>(q) / count / (255.0 * 255.0) - mean * mean;
    norm.mean.push_back(static_cast<float>(mean));
    norm.stddev.push_back(static_cast<float>(std::sqrt(std::max(var, 1e-12))));
  }
  return norm;
}

BatchLoader::BatchLoader(const Dataset& dataset, LoaderOptions options)
    : dataset_(&dataset), options_(std::move(options)) {
  if (options_.batch_size < 1)
    throw ArgumentError(fmt::format("batch size {}: expected at least 1", options_.batch_size));
  if (dataset.size() == 0) throw ArgumentError(fmt::format("{}: the dataset is empty", dataset.name));
  if (options_.augmentation.pad_crop < 0 || options_.augmentation.pad_crop >= std::min(dataset.height, dataset.width))
    throw ArgumentError(fmt::format("pad-crop {}: expected 0 to {}", options_.augmentation.pad_crop,
                                    std::min(dataset.height, dataset.width) - 1));
  if (options_.normalization.mean.empty()) options_.normalization = compute_normalization(dataset);
  const auto& norm = options_.normalization;
  if (static_cast<int64_t>(norm.mean.size()) != dataset.channels ||
      static_cast<int64_t>(norm.stddev.size()) != dataset.channels)
    throw ArgumentError(fmt::format("{}: normalization has {} means and {} deviations for {} channels", dataset.name,
                                    norm.mean.size(), norm.stddev.size(), dataset.channels));
  for (float s : norm.stddev)
    if (!(s > 0)) throw ArgumentError(fmt::format("{}: normalization standard deviation {} must be > 0", dataset.name, s));
  set_epoch(0);
}

void BatchLoader::set_epoch(int epoch) {
  epoch_ = epoch;
  order_.resize(static_cast<std::size_t>(dataset_->size()));
  std::iota(order_.begin(), order_.end(), int64_t{0});
  if (options_.shuffle) {
    Rng rng = Rng(options_.seed).fork(0x5f1e0000ULL + static_cast<uint64_t>(epoch));
    rng.shuffle(std::span<int64_t>(order_));
  }
}

int64_t BatchLoader::num_images() const {
  if (!options_.drop_last) return dataset_->size();
  return dataset_->size() / options_.batch_size * options_.batch_size;
}

int64_t BatchLoader::num_batches() const {
  const int64_t b = options_.batch_size;
  return options_.drop_last ? dataset_->size() / b : (dataset_->size() + b - 1) / b;
}

Batch BatchLoader::batch(int64_t index) const {
  Batch out;
  fill_batch(index, out);
  return out;
}

void BatchLoader::fill_batch(int64_t index, Batch& out) const {
  if (index < 0 || index >= num_batches())
    throw ArgumentError(fmt::format("batch {} of an epoch with {} batches", index, num_batches()));
  const Dataset& d = *dataset_;
  const int64_t begin = index * options_.batch_size;
  const int64_t count = std::min(options_.batch_size, d.size() - begin);
  const int64_t C = d.channels, H = d.height, W = d.width;
  const Shape shape{count, C, H, W};
  if (out.images.shape() != shape) out.images = Tensor(shape);
  out.labels.resize(static_cast<std::size_t>(count));
  out.indices.resize(static_cast<std::size_t>(count));

  // 256-entry lookup per channel: pixel byte -> normalized float, (v / 255 - mean) / std by the
  // runtime's own input preparation (core float_ops), so that a deployed model given the pixels
  // v / 255 computes the very floats the model was trained and evaluated on.
  std::vector<float> lut(static_cast<std::size_t>(C * 256));
  for (int64_t c = 0; c < C; ++c) {
    float* row = lut.data() + c * 256;
    for (int v = 0; v < 256; ++v) row[v] = static_cast<float>(v) / 255.0f;
    float_ops::prepare_row(row, 256, true, options_.normalization.mean[static_cast<std::size_t>(c)],
                           options_.normalization.stddev[static_cast<std::size_t>(c)], false, 0.0f, 0.0f, row);
  }

  const int pad = options_.augmentation.pad_crop;
  const bool flip = options_.augmentation.horizontal_flip;
  const Rng base(options_.seed);
  parallel_for(count, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t image_index = order_[static_cast<std::size_t>(begin + b)];
      out.indices[static_cast<std::size_t>(b)] = image_index;
      out.labels[static_cast<std::size_t>(b)] = d.labels[static_cast<std::size_t>(image_index)];
      // Augmentation depends only on (seed, epoch, image): reproducible for any thread count.
      int dy = 0, dx = 0;
      bool mirror = false;
      if (pad > 0 || flip) {
        Rng rng = base.fork((static_cast<uint64_t>(epoch_) << 32) ^ static_cast<uint64_t>(image_index));
        if (pad > 0) {
          dy = static_cast<int>(rng.below(static_cast<uint64_t>(2 * pad + 1))) - pad;
          dx = static_cast<int>(rng.below(static_cast<uint64_t>(2 * pad + 1))) - pad;
        }
        if (flip) mirror = rng.bernoulli(0.5f);
        // Alternating: the image's first-epoch coin (its own stream, apart from the per-epoch
        // ones), flipped in odd epochs.
        if (flip && options_.augmentation.alternate_flip)
          mirror = base.fork(~static_cast<uint64_t>(image_index)).bernoulli(0.5f) != ((epoch_ & 1) != 0);
      }
      const uint8_t* src = d.images.data() + image_index * d.image_numel();
      float* dst = out.images.data() + b * C * H * W;
      for (int64_t c = 0; c < C; ++c) {
        const float* table = lut.data() + c * 256;
        const float pad_value = table[0];  // zero padding in pixel space, as torchvision's RandomCrop
        for (int64_t y = 0; y < H; ++y) {
          const int64_t sy = y + dy;
          float* row = dst + (c * H + y) * W;
          if (sy < 0 || sy >= H) {
            for (int64_t x = 0; x < W; ++x) row[x] = pad_value;
            continue;
          }
          const uint8_t* src_row = src + (c * H + sy) * W;
          for (int64_t x = 0; x < W; ++x) {
            const int64_t out_x = mirror ? W - 1 - x : x;
            const int64_t sx = x + dx;
            row[out_x] = (sx < 0 || sx >= W) ? pad_value : table[src_row[sx]];
          }
        }
      }
    }
  });
}

}  // namespace bitmix::data
