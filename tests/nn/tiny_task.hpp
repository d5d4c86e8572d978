#pragma once
// A tiny learnable task shared by the training tests: three classes of 1x8x8 images (a bright
// horizontal band at one of three heights, on noise) and a ResNet-8 of width 4 sized for them.
// Small enough that a few epochs run in well under a second, hard enough that an untrained or
// broken network stays near chance (33 %).

#include <cstdint>
#include <memory>

#include "bitmix/core/rng.hpp"
#include "bitmix/data/dataset.hpp"
#include "bitmix/nn/models.hpp"

namespace bitmix::nn::testing {

// Class k of 3: a bright k-th horizontal band on noise, 1x8x8 pixels.
inline data::Dataset band_images(int64_t count, uint64_t seed) {
  data::Dataset d;
  d.name = "bands";
  d.channels = 1;
  d.height = d.width = 8;
  d.class_names = {"top", "middle", "bottom"};
  Rng rng(seed);
  for (int64_t i = 0; i < count; ++i) {
    const int label = static_cast<int>(i % 3);
    d.labels.push_back(static_cast<uint8_t>(label));
    for (int64_t y = 0; y < 8; ++y)
      for (int64_t x = 0; x < 8; ++x) {
        const bool band = y >= label * 3 && y < label * 3 + 2;
        d.images.push_back(static_cast<uint8_t>((band ? 150 : 40) + rng.below(60)));
      }
  }
  return d;
}

inline ModelSpec tiny_resnet8_spec(uint64_t seed) {
  ModelSpec spec;
  spec.arch = "resnet8";
  spec.width = 4;
  spec.in_channels = 1;
  spec.image_height = spec.image_width = 8;
  spec.num_classes = 3;
  spec.seed = seed;
  return spec;
}

inline std::unique_ptr<Module> tiny_resnet8(uint64_t seed) { return make_model(tiny_resnet8_spec(seed)); }

}  // namespace bitmix::nn::testing
