#pragma once
// Small QAT models for the deployment tests: a ResNet-8 or VGG-small with random weights,
// BatchNorm statistics gathered from random data, and quantizers calibrated on it.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bitmix/core/rng.hpp"
#include "bitmix/deploy/compiler.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/runtime/session.hpp"

namespace bitmix::deploy::testing {

struct QatNet {
  nn::ModelSpec spec;
  std::unique_ptr<nn::Module> model;
  quant::BitConfig config;
  Shape image() const { return {spec.in_channels, spec.image_height, spec.image_width}; }
};

inline Tensor random_inputs(Rng& rng, int64_t n, const Shape& image) {
  Tensor x({n, image[0], image[1], image[2]});
  for (float& v : x.values()) v = rng.normal(0.0f, 1.0f);
  return x;
}

inline std::vector<nn::QuantizerTransform*> all_quantizers(nn::Module& model, const Shape& image) {
  std::vector<nn::QuantizerTransform*> out;
  for (const nn::LayerQuantizers& l : nn::attached_quantizers(model, image)) {
    if (l.weight != nullptr) out.push_back(l.weight);
    if (l.input != nullptr) out.push_back(l.input);
  }
  return out;
}

// A QAT model with `bits` on every layer (first and last at 8 bits unless `pin` is false),
// BatchNorm running statistics from training-mode passes of the float network and
// quantizers calibrated (MSE) on random normal inputs.
// `edit` may change the configuration (e.g. per-layer bits) before it is applied.
inline QatNet make_qat_net(const nn::ModelSpec& spec, const nn::UniformBits& bits, uint64_t seed,
                           const std::function<void(quant::BitConfig&)>& edit = {}) {
  QatNet net;
  net.spec = spec;
  net.model = nn::make_model(net.spec);
  const Shape image = net.image();
  net.config = nn::uniform_bit_config(*net.model, image, spec.arch, bits);
  if (edit) edit(net.config);
  nn::apply_bit_config(*net.model, image, net.config);
  Rng rng(seed * 7 + 1);
  // BatchNorm statistics: training-mode passes of the float network (quantizers bypassed),
  // with random affine parameters so that folding has something to fold.
  for (nn::Module* m : net.model->modules())
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(m)) {
      for (int64_t c = 0; c < bn->channels(); ++c) {
        bn->weight().value[c] = rng.uniform(0.5f, 1.5f) * (rng.bernoulli(0.1f) ? -1.0f : 1.0f);
        bn->bias().value[c] = rng.uniform(-0.3f, 0.3f);
      }
    }
  for (nn::QuantizerTransform* q : all_quantizers(*net.model, image)) q->set_bypass(true);
  net.model->train();
  for (int i = 0; i < 12; ++i) net.model->forward(random_inputs(rng, 16, image));
  for (nn::QuantizerTransform* q : all_quantizers(*net.model, image)) q->set_bypass(false);
  net.model->eval();
  std::vector<Tensor> batches;
  for (int i = 0; i < 2; ++i) batches.push_back(random_inputs(rng, 16, image));
  nn::calibrate_quantizers(*net.model, batches);
  net.model->forward(batches[0]);  // initializes whatever calibration left (weights of non-range kinds)
  return net;
}

// The same for a zoo architecture on 3-channel 12x12 images (16x16 for vgg-small), 5 classes.
inline QatNet make_qat_net(const std::string& arch, const nn::UniformBits& bits, uint64_t seed,
                           nn::ShortcutOption shortcut = nn::ShortcutOption::A, int64_t width = 8,
                           const std::function<void(quant::BitConfig&)>& edit = {}) {
  nn::ModelSpec spec;
  spec.arch = arch;
  spec.in_channels = 3;
  spec.image_height = spec.image_width = arch == "vgg-small" ? 16 : 12;
  spec.num_classes = 5;
  spec.shortcut = shortcut;
  spec.width = width;
  spec.seed = seed;
  return make_qat_net(spec, bits, seed, edit);
}

inline runtime::Model compile_net(QatNet& net, CompileReport* report = nullptr) {
  CompileOptions o;
  o.architecture = net.spec.arch;
  o.name = net.spec.arch + "-test";
  return compile(*net.model, net.image(), o, report);
}

inline bool same_bits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, sizeof(float) * static_cast<std::size_t>(n)) == 0;
}

}  // namespace bitmix::deploy::testing
