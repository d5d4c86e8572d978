// Checkpoints of QAT models: quantizer state saved and restored under the adapter's names, a
// float checkpoint loaded into a quantized model (the float weights exactly, quantizers left to
// initialize from data), a search-style checkpoint carrying only the chosen steps, and strictness
// about everything that is not quantizer state.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/quantization.hpp"
#include "tiny_task.hpp"

namespace bitmix::nn {
namespace {

using quant::QuantizerKind;

const Shape kImage{1, 8, 8};

Tensor batch(uint64_t seed) {
  Rng rng(seed);
  Tensor x({6, 1, 8, 8});
  for (float& v : x.values()) v = rng.normal(0.0f, 1.0f);
  return x;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.numel())) == 0;
}

std::map<std::string, Tensor> state_of(Module& model) {
  std::map<std::string, Tensor> out;
  for (const NamedParameter& p : model.named_parameters()) out["p:" + p.name] = p.parameter->value;
  for (const NamedBuffer& b : model.named_buffers()) out["b:" + b.name] = b.buffer->value;
  return out;
}

Checkpoint checkpoint_of(Module& model) {
  Checkpoint ck;
  add_model_state(ck, model);
  return ck;
}

quant::BitConfig mixed_config(Module& model) {
  quant::BitConfig c = uniform_bit_config(model, kImage, "resnet8", UniformBits{3, 3});
  c.layers[2].w_quant = QuantizerKind::dorefa;  // stateless
  c.layers[3].a_quant = QuantizerKind::pact;    // "alpha"
  c.layers[4].a_quant = QuantizerKind::uniform;  // range buffers
  c.layers[4].w_quant = QuantizerKind::uniform;
  return c;
}

TEST(QatCheckpoint, RoundTripRestoresNamesAndValues) {
  auto model = testing::tiny_resnet8(1);
  const quant::BitConfig config = mixed_config(*model);
  apply_bit_config(*model, kImage, config);
  model->forward(batch(1));  // initializes steps and ranges from data
  // Make the learnable state differ from any initialization.
  for (const NamedParameter& p : model->named_parameters())
    if (p.name.find("_transform.") != std::string::npos)
      for (float& v : p.parameter->value.values()) v *= 1.25f;

  const auto path = std::filesystem::temp_directory_path() / "bitmix_nn_qat_roundtrip.ckpt";
  save_checkpoint(path, checkpoint_of(*model));
  const Checkpoint loaded = load_checkpoint(path);
  std::filesystem::remove(path);
  // The quantizer entries are in the file under the adapter's names.
  EXPECT_NE(loaded.find(CheckpointTensorKind::parameter, "layer1.0.conv1.weight_transform.step"), nullptr);
  EXPECT_NE(loaded.find(CheckpointTensorKind::parameter, "conv1.input_transform.step"), nullptr);
  EXPECT_NE(loaded.find(CheckpointTensorKind::buffer, "fc.input_transform.initialized"), nullptr);
  EXPECT_NE(loaded.find(CheckpointTensorKind::parameter, config.layers[3].name + ".input_transform.alpha"), nullptr);
  EXPECT_NE(loaded.find(CheckpointTensorKind::buffer, config.layers[4].name + ".input_transform.range_max"), nullptr);

  auto copy = testing::tiny_resnet8(2);  // other weights
  apply_bit_config(*copy, kImage, config);
  const QuantizedLoadReport report = load_quantized_model_state(*copy, loaded, {}, "roundtrip.ckpt");
  EXPECT_TRUE(report.model.missing.empty());
  EXPECT_TRUE(report.to_initialize.empty());
  EXPECT_TRUE(report.marked_initialized.empty());
  EXPECT_EQ(report.restored.size(), 2u * config.layers.size() - 1u);  // the dorefa weights have no state

  const auto a = state_of(*model), b = state_of(*copy);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, value] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(same_bits(value, b.at(name))) << name;
  }
  // Same function: the restored model computes the same outputs, with no re-initialization.
  model->eval();
  copy->eval();
  const Tensor x = batch(3);
  EXPECT_TRUE(same_bits(model->forward(x), copy->forward(x)));
  EXPECT_TRUE(same_bits(state_of(*copy).at("p:layer1.0.conv1.weight_transform.step"),
                        a.at("p:layer1.0.conv1.weight_transform.step")));
}

TEST(QatCheckpoint, FloatCheckpointGivesTheFloatWeightsAndFreshQuantizers) {
  auto float_model = testing::tiny_resnet8(1);
  float_model->forward(batch(1));  // moves BatchNorm running statistics off their defaults
  const Checkpoint float_ck = checkpoint_of(*float_model);

  auto model = testing::tiny_resnet8(2);
  apply_bit_config(*model, kImage, mixed_config(*model));
  model->forward(batch(2));  // stale quantizer state derived from the other weights
  const QuantizedLoadReport report = load_quantized_model_state(*model, float_ck, {}, "float.ckpt");
  EXPECT_TRUE(report.restored.empty());
  EXPECT_TRUE(report.marked_initialized.empty());
  EXPECT_EQ(report.to_initialize.size(), 15u);  // 16 quantizers, one stateless
  EXPECT_FALSE(report.model.missing.empty());    // the quantizer entries

  // Every float parameter and buffer is the float model's, bit for bit.
  const auto floats = state_of(*float_model), got = state_of(*model);
  for (const auto& [name, value] : floats) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_TRUE(same_bits(value, got.at(name))) << name;
  }
  // Quantizers start again: "initialized" back to 0, PACT's alpha back to its initial value.
  for (const NamedBuffer& b : model->named_buffers())
    if (b.name.ends_with("_transform.initialized") || b.name.ends_with("_transform.range_frozen")) {
      EXPECT_EQ(b.buffer->value[0], 0.0f) << b.name;
    }
  for (const NamedParameter& p : model->named_parameters())
    if (p.name.ends_with(".alpha")) {
      EXPECT_EQ(p.parameter->value[0], 10.0f) << p.name;
    }

  // The first forward initializes LSQ steps from the float weights: 2 mean|w| / sqrt(Q_P).
  model->forward(batch(4));
  Module* conv = model->find("layer2.0.conv1");
  ASSERT_NE(conv, nullptr);
  const Tensor& w = dynamic_cast<Conv2d&>(*conv).weight().value;
  const Tensor* step = nullptr;
  for (const NamedParameter& p : model->named_parameters())
    if (p.name == "layer2.0.conv1.weight_transform.step") step = &p.parameter->value;
  ASSERT_NE(step, nullptr);
  const int64_t per_channel = w.numel() / w.shape()[0];
  for (int64_t o = 0; o < w.shape()[0]; ++o) {
    double sum = 0;
    for (int64_t i = 0; i < per_channel; ++i) sum += double{std::abs(w[o * per_channel + i])};
    EXPECT_NEAR(double{(*step)[o]}, 2.0 * sum / static_cast<double>(per_channel) / std::sqrt(3.0), 1e-5) << o;
  }
}

// The search exports only the chosen candidate's learnable step under the adapter's names: the
// steps are kept and marked initialized (a first forward must not overwrite them).
TEST(QatCheckpoint, StepsWithoutFlagsAreKept) {
  auto float_model = testing::tiny_resnet8(1);
  Checkpoint ck = checkpoint_of(*float_model);
  auto model = testing::tiny_resnet8(1);
  const quant::BitConfig config = uniform_bit_config(*model, kImage, "resnet8", UniformBits{2, 4});
  apply_bit_config(*model, kImage, config);
  const std::string name = "layer2.0.conv1.weight_transform.step";
  Tensor searched({8});
  for (int64_t i = 0; i < 8; ++i) searched[i] = 0.01f * static_cast<float>(i + 1);
  ck.add(CheckpointTensorKind::parameter, name, searched);
  ck.add(CheckpointTensorKind::parameter, "layer2.0.conv1.input_transform.step", Tensor({1}, 0.3f));
  const QuantizedLoadReport report = load_quantized_model_state(*model, ck, {}, "search.ckpt");
  ASSERT_EQ(report.marked_initialized.size(), 2u);
  EXPECT_EQ(report.marked_initialized[0], "layer2.0.conv1.weight_transform");
  EXPECT_EQ(report.to_initialize.size(), 2u * config.layers.size() - 2u);
  model->forward(batch(5));
  for (const NamedParameter& p : model->named_parameters()) {
    if (p.name == name) {
      EXPECT_TRUE(same_bits(p.parameter->value, searched));
    }
    if (p.name == "layer2.0.conv1.input_transform.step") {
      EXPECT_EQ(p.parameter->value[0], 0.3f);
    }
  }

  // A step of the wrong granularity is a shape error naming the entry.
  Checkpoint wrong = checkpoint_of(*float_model);
  wrong.add(CheckpointTensorKind::parameter, name, Tensor({1}, 0.1f));
  try {
    load_quantized_model_state(*model, wrong, {}, "search.ckpt");
    ADD_FAILURE() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("search.ckpt"), std::string::npos) << e.what();
  }
}

TEST(QatCheckpoint, OnlyQuantizerStateMayBeMissing) {
  auto float_model = testing::tiny_resnet8(1);
  Checkpoint ck = checkpoint_of(*float_model);
  std::erase_if(ck.entries, [](const CheckpointEntry& e) { return e.name == "layer3.0.bn2.running_var"; });
  auto model = testing::tiny_resnet8(2);
  apply_bit_config(*model, kImage, uniform_bit_config(*model, kImage, "resnet8", UniformBits{4, 4}));
  const auto before = state_of(*model);
  try {
    load_quantized_model_state(*model, ck, {}, "partial.ckpt");
    ADD_FAILURE() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("layer3.0.bn2.running_var"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("partial.ckpt"), std::string::npos) << e.what();
  }
  // Unexpected entries (here: quantizer state for a model without quantizers) are refused
  // unless allowed.
  auto qat = testing::tiny_resnet8(3);
  apply_bit_config(*qat, kImage, uniform_bit_config(*qat, kImage, "resnet8", UniformBits{4, 4}));
  qat->forward(batch(1));
  const Checkpoint qat_ck = checkpoint_of(*qat);
  auto plain = testing::tiny_resnet8(4);
  EXPECT_THROW(load_quantized_model_state(*plain, qat_ck, {}, "qat.ckpt"), FormatError);
  LoadOptions tolerant;
  tolerant.allow_unexpected = true;
  const QuantizedLoadReport r = load_quantized_model_state(*plain, qat_ck, tolerant, "qat.ckpt");
  EXPECT_EQ(r.model.unexpected.size(), 32u);
  // The failed loads left the model as it was.
  const auto after = state_of(*model);
  for (const auto& [name, value] : before) EXPECT_TRUE(same_bits(value, after.at(name))) << name;
}

}  // namespace
}  // namespace bitmix::nn
