// QAT end to end on a small synthetic task: a quantized model trained by the Trainer learns (and
// its quantizer parameters move), and calibration sets each quantizer to what a calibrator fed
// the float network's activations by hand gives, without touching BatchNorm statistics.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "bitmix/core/error.hpp"
#include "bitmix/data/loader.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/nn/trainer.hpp"
#include "tiny_task.hpp"

namespace bitmix::nn {
namespace {

using quant::QuantizerKind;

const Shape kImage{1, 8, 8};

TEST(QatTraining, A2BitModelLearns) {
  const data::Dataset train = testing::band_images(300, 1), test = testing::band_images(90, 2);
  auto model = testing::tiny_resnet8(5);
  UniformBits bits{2, 2};
  bits.policy = quant::BitPolicy::none();  // every layer at 2 bits
  apply_bit_config(*model, kImage, uniform_bit_config(*model, kImage, "resnet8", bits));
  std::vector<float> steps_before;
  for (const NamedParameter& p : model->named_parameters())
    if (p.name.ends_with("_transform.step")) steps_before.push_back(p.parameter->value[0]);
  ASSERT_EQ(steps_before.size(), 16u);

  TrainerOptions o;
  o.epochs = 4;
  o.batch_size = 32;
  o.lr = 0.05f;
  o.weight_decay = 1e-4f;
  o.seed = 3;
  o.progress = false;
  Trainer trainer(*model, train, &test, o);
  const std::vector<EpochStats>& history = trainer.fit();
  ASSERT_EQ(history.size(), 4u);
  EXPECT_LT(history.back().train_loss, 0.7 * history.front().train_loss);
  EXPECT_GT(history.back().test_accuracy, 0.8);  // chance is 1/3

  // Steps were initialized from data on the first forward and then trained.
  std::size_t i = 0, moved = 0;
  for (const NamedParameter& p : model->named_parameters())
    if (p.name.ends_with("_transform.step")) moved += p.parameter->value[0] != steps_before[i++] ? 1 : 0;
  EXPECT_EQ(moved, 16u);
  for (const NamedBuffer& b : model->named_buffers())
    if (b.name.ends_with("_transform.initialized")) {
      EXPECT_EQ(b.buffer->value[0], 1.0f) << b.name;
    }
}

// Calibration against calibrators fed by hand: the first layer sees the batches themselves; the
// last (fc) sees the pooled features of the float network in evaluation mode.
TEST(QatCalibration, MatchesHandCalibratorsOnTheFloatNetwork) {
  auto model = testing::tiny_resnet8(6);
  // Move the BatchNorm statistics away from their defaults, so evaluation mode matters.
  const data::Dataset train = testing::band_images(96, 4);
  data::LoaderOptions lo;
  lo.batch_size = 32;
  const data::BatchLoader loader(train, lo);
  model->train();
  for (int64_t b = 0; b < 3; ++b) model->forward(loader.batch(b).images);

  quant::BitConfig config = uniform_bit_config(*model, kImage, "resnet8", UniformBits{3, 3});
  config.layers[2].a_quant = QuantizerKind::uniform;
  config.layers[3].a_quant = QuantizerKind::pact;
  config.layers[4].w_quant = QuantizerKind::sawb;
  config.layers[5].a_quant = QuantizerKind::dorefa;
  apply_bit_config(*model, kImage, config);

  // References: a float copy of the model, its fc inputs captured by a bypassed transform.
  auto float_model = testing::tiny_resnet8(6);
  {
    Checkpoint ck;
    add_model_state(ck, *model);
    load_model_state(*float_model, ck, LoadOptions{false, true});
  }
  float_model->eval();
  const quant::CalibrationOptions method{quant::CalibrationMethod::mse};
  const std::vector<LayerQuantizers> attached = attached_quantizers(*model, kImage);
  quant::Quantizer first_ref(attached.front().input->spec()), fc_ref(attached.back().input->spec());
  quant::Quantizer w_ref(attached[1].weight->spec());
  quant::Calibrator first_cal(method, first_ref), fc_cal(method, fc_ref), w_cal(method, w_ref);
  Linear& fc = dynamic_cast<Linear&>(*float_model->find("fc"));
  fc.set_input_transform(std::make_unique<QuantizerTransform>(fc_ref.spec()));
  auto& capture = dynamic_cast<QuantizerTransform&>(*fc.input_transform());
  capture.begin_observation(method);
  std::vector<Tensor> batches;
  for (int64_t b = 0; b < 3; ++b) {
    batches.push_back(loader.batch(b).images);
    first_cal.observe(batches.back());
    float_model->forward(batches.back());
  }
  capture.end_observation();  // == a calibrator fed fc's float inputs
  first_cal.apply(first_ref);
  w_cal.observe(dynamic_cast<Conv2d&>(*model->find(attached[1].name)).weight().value);
  w_cal.apply(w_ref);

  const std::vector<NamedBuffer> buffers_before = model->named_buffers();
  std::vector<Tensor> bn_before;
  for (const NamedBuffer& b : buffers_before)
    if (b.name.find("bn") != std::string::npos) bn_before.push_back(b.buffer->value);

  model->train();
  QatCalibrationOptions options;
  options.method = method;
  const CalibrationReport report = calibrate_quantizers(*model, batches, options);
  EXPECT_EQ(report.batches, 3);
  EXPECT_TRUE(model->training());  // restored
  // Calibrated: 8 inputs but the dorefa one, LSQ weights (7 of 8: one is sawb).
  EXPECT_EQ(report.calibrated.size(), 7u + 7u);
  EXPECT_EQ(report.skipped.size(), 2u);

  const auto param = [&](const std::string& name) -> const Tensor& {
    for (const NamedParameter& p : model->named_parameters())
      if (p.name == name) return p.parameter->value;
    throw Error("no parameter " + name);
  };
  EXPECT_EQ(param("conv1.input_transform.step")[0], first_ref.parameters()[0]->value[0]);
  EXPECT_EQ(param("fc.input_transform.step")[0], capture.quantizer().parameters()[0]->value[0]);
  const Tensor& w_step = param(attached[1].name + ".weight_transform.step");
  for (int64_t c = 0; c < w_step.numel(); ++c) EXPECT_EQ(w_step[c], w_ref.parameters()[0]->value[c]) << c;
  // The uniform activation range is fixed; BatchNorm statistics are untouched; nothing is left
  // bypassed.
  for (const NamedBuffer& b : model->named_buffers()) {
    if (b.name == config.layers[2].name + ".input_transform.range_frozen") {
      EXPECT_EQ(b.buffer->value[0], 1.0f);
    }
  }
  std::size_t k = 0;
  for (const NamedBuffer& b : model->named_buffers())
    if (b.name.find("bn") != std::string::npos) {
      EXPECT_EQ(std::memcmp(b.buffer->value.data(), bn_before[k++].data(), sizeof(float) * b.buffer->value.numel()), 0)
          << b.name;
    }
  for (const LayerQuantizers& l : attached_quantizers(*model, kImage)) {
    EXPECT_FALSE(l.weight->bypassed()) << l.name;
    EXPECT_FALSE(l.input->bypassed()) << l.name;
  }
  EXPECT_THROW(calibrate_quantizers(*model, std::span<const Tensor>{}), ArgumentError);

  // `only` restricts calibration to the named quantizers.
  const float fc_step = param("fc.input_transform.step")[0];
  const float first_step = param("conv1.input_transform.step")[0];
  options.method.method = quant::CalibrationMethod::min_max;
  options.only = {"fc.input_transform"};
  const CalibrationReport only = calibrate_quantizers(*model, batches, options);
  ASSERT_EQ(only.calibrated.size(), 1u);
  EXPECT_EQ(only.calibrated[0], "fc.input_transform");
  EXPECT_NE(param("fc.input_transform.step")[0], fc_step);  // min-max is wider than the MSE clip
  EXPECT_EQ(param("conv1.input_transform.step")[0], first_step);
}

}  // namespace
}  // namespace bitmix::nn
