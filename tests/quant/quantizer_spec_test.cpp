// Names, spec validation (every error names the value at fault and what is accepted),
// parameters and buffers, and the rounding primitive.

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/quant/quantizer.hpp"
#include "quant/rounding.hpp"

namespace bitmix::quant {
namespace {

// Expects ArgumentError whose message contains every fragment.
template <class Fn>
void expect_argument_error(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected ArgumentError";
  } catch (const ArgumentError& e) {
    const std::string message = e.what();
    for (const std::string& f : fragments) EXPECT_NE(message.find(f), std::string::npos) << message;
  }
}

TEST(QuantizerSpec, NamesRoundTrip) {
  for (QuantizerKind k : all_quantizer_kinds()) EXPECT_EQ(parse_quantizer_kind(to_string(k)), k);
  EXPECT_EQ(all_quantizer_kinds().size(), 13u);
  EXPECT_EQ(parse_quantizer_kind("float"), QuantizerKind::float_bypass);
  EXPECT_EQ(parse_role("activation"), Role::activation);
  EXPECT_EQ(parse_granularity("per_channel"), Granularity::per_channel);
  expect_argument_error([] { parse_quantizer_kind("lsqq"); }, {"'lsqq'", "uniform", "dorefa", "ternary", "float"});
  expect_argument_error([] { parse_granularity("channel"); }, {"'channel'", "per_tensor", "per_channel"});
  expect_argument_error([] { parse_role("bias"); }, {"'bias'", "weight", "activation"});
}

TEST(QuantizerSpec, InvalidCombinationsAreRejectedWithReasons) {
  expect_argument_error([] { validate(weight_spec(QuantizerKind::lsq, 9)); }, {"bits = 9", "1 to 8"});
  expect_argument_error([] { validate(activation_spec(QuantizerKind::uniform, 0)); }, {"bits = 0", "1 to 8"});
  expect_argument_error([] { validate(weight_spec(QuantizerKind::float_bypass, 8)); }, {"bits = 8", "32"});
  expect_argument_error([] { validate(weight_spec(QuantizerKind::pact, 4)); },
                        {"pact", "weights", "lsq", "sawb"});
  expect_argument_error([] { validate(activation_spec(QuantizerKind::sawb, 4)); },
                        {"sawb", "weights only", "pact"});
  expect_argument_error([] { validate(weight_spec(QuantizerKind::binary, 2)); }, {"bits = 2", "binary"});
  expect_argument_error([] { validate(weight_spec(QuantizerKind::ternary, 3)); }, {"bits = 3", "2 bits"});
  expect_argument_error([] { validate(weight_spec(QuantizerKind::pot, 7)); }, {"bits = 7", "2 to 6"});
  expect_argument_error([] { validate(weight_spec(QuantizerKind::symmetric, 1)); }, {"bits = 1", "binary"});
  expect_argument_error([] { validate(activation_spec(QuantizerKind::dorefa, 4, true)); }, {"signed", "dorefa"});
  expect_argument_error([] { validate(activation_spec(QuantizerKind::lsq, 1, true)); }, {"bits = 1", "signed"});
  QuantizerSpec per_channel_activation = activation_spec(QuantizerKind::lsq, 4);
  per_channel_activation.granularity = Granularity::per_channel;
  per_channel_activation.channels = 8;
  expect_argument_error([&] { validate(per_channel_activation); }, {"per_channel", "per_tensor"});
  expect_argument_error([] { validate(weight_spec(QuantizerKind::lsq, 4, Granularity::per_channel, 0)); },
                        {"channels = 0"});
  QuantizerSpec bad_momentum = activation_spec(QuantizerKind::uniform, 8);
  bad_momentum.ema_momentum = 0.0f;
  expect_argument_error([&] { validate(bad_momentum); }, {"ema_momentum"});
  // The constructor validates too.
  EXPECT_THROW(Quantizer(weight_spec(QuantizerKind::pact, 4)), ArgumentError);
  // And valid ones pass.
  EXPECT_NO_THROW(validate(weight_spec(QuantizerKind::lsq, 1)));
  EXPECT_NO_THROW(validate(activation_spec(QuantizerKind::pact, 8)));
  EXPECT_NO_THROW(validate(weight_spec(QuantizerKind::float_bypass, kFloatBits)));
}

TEST(QuantizerSpec, FactoryByName) {
  const Quantizer q = make_quantizer("sawb", Role::weight, 3, Granularity::per_channel, 8);
  EXPECT_EQ(q.kind(), QuantizerKind::sawb);
  EXPECT_EQ(q.groups(), 8);
  EXPECT_EQ(make_quantizer("pact", Role::activation, 4).bits(), 4);
  expect_argument_error([] { make_quantizer("lsqq", Role::weight, 4); }, {"'lsqq'"});
  expect_argument_error([] { make_quantizer("pact", Role::weight, 4); }, {"pact", "weights"});
  expect_argument_error([] { make_quantizer("lsq", Role::activation, 12); }, {"bits = 12"});
}

TEST(QuantizerSpec, CodeBitsOfPowerOfTwoLevels) {
  // 2^(b-1)-1 exponents: codes up to 2^(2^(b-1)-2), which need 2^(b-1) two's complement bits.
  EXPECT_EQ(code_bits(weight_spec(QuantizerKind::pot, 2)), 2);
  EXPECT_EQ(code_bits(weight_spec(QuantizerKind::pot, 3)), 4);
  EXPECT_EQ(code_bits(weight_spec(QuantizerKind::pot, 4)), 8);
  EXPECT_EQ(code_bits(weight_spec(QuantizerKind::pot, 5)), 16);
  EXPECT_EQ(code_bits(weight_spec(QuantizerKind::pot, 6)), 32);
  EXPECT_EQ(code_bits(weight_spec(QuantizerKind::lsq, 3)), 3);
  EXPECT_EQ(code_bits(weight_spec(QuantizerKind::float_bypass, kFloatBits)), kFloatBits);
  // The largest 6-bit code, 2^30, survives the export.
  Quantizer q(weight_spec(QuantizerKind::pot, 6));
  const Tensor w({3}, {1.0f, -1e-9f, 0.5f});
  const QuantizedTensor e = q.quantize(w);
  EXPECT_EQ(e.codes[0], int32_t{1} << 30);
  EXPECT_EQ(e.params.max_code, int32_t{1} << 30);
}

TEST(QuantizerSpec, ParametersAndBuffersHaveLocalNames) {
  Quantizer lsq(weight_spec(QuantizerKind::lsq, 4, Granularity::per_channel, 16));
  ASSERT_EQ(lsq.parameters().size(), 1u);
  EXPECT_EQ(lsq.parameters()[0]->name, "step");
  EXPECT_EQ(lsq.parameters()[0]->value.shape(), (Shape{16}));
  ASSERT_EQ(lsq.buffers().size(), 1u);
  EXPECT_EQ(lsq.buffers()[0]->name, "initialized");

  Quantizer pact(activation_spec(QuantizerKind::pact, 4));
  ASSERT_EQ(pact.parameters().size(), 1u);
  EXPECT_EQ(pact.parameters()[0]->name, "alpha");
  EXPECT_FLOAT_EQ(pact.parameters()[0]->value[0], 10.0f);

  Quantizer uniform(activation_spec(QuantizerKind::uniform, 8));
  std::vector<std::string> names;
  for (Buffer* b : uniform.buffers()) names.push_back(b->name);
  EXPECT_EQ(names, (std::vector<std::string>{"range_min", "range_max", "initialized", "range_frozen"}));

  Quantizer sawb(weight_spec(QuantizerKind::sawb, 2));
  EXPECT_TRUE(sawb.parameters().empty());
  EXPECT_TRUE(sawb.buffers().empty());
  EXPECT_THROW(sawb.params(), ArgumentError);  // the scale follows the weights
  EXPECT_THROW(sawb.set_range(std::vector<float>{-1.0f}, std::vector<float>{1.0f}), ArgumentError);
}

TEST(QuantizerSpec, StateSurvivesMovesAndCheckpointRestores) {
  Quantizer a(activation_spec(QuantizerKind::lsq, 4));
  Parameter* step = a.parameters()[0];
  Quantizer b = std::move(a);
  EXPECT_EQ(b.parameters()[0], step);  // the pointers collected by an optimizer stay valid
  // Restoring a checkpoint = writing the values: the restored step is used, not re-initialized.
  step->value[0] = 0.25f;
  b.buffers()[0]->value[0] = 1.0f;
  const Tensor x({4}, {0.1f, 0.3f, 0.6f, 10.0f});
  const Tensor y = b.forward(x);
  EXPECT_FLOAT_EQ(y[1], 0.25f);
  EXPECT_FLOAT_EQ(y[3], 15 * 0.25f);
  EXPECT_FLOAT_EQ(step->value[0], 0.25f);
}

TEST(QuantizerSpec, ActivationRangeFollowsAMovingAverageInTrainingOnly) {
  QuantizerSpec spec = activation_spec(QuantizerKind::uniform, 8);
  spec.ema_momentum = 0.5f;
  Quantizer q(spec);
  q.forward(Tensor({2}, {0.0f, 4.0f}));  // first batch sets the range
  EXPECT_FLOAT_EQ(q.buffers()[1]->value[0], 4.0f);
  q.forward(Tensor({2}, {0.0f, 8.0f}));  // 4 + 0.5 (8 - 4)
  EXPECT_FLOAT_EQ(q.buffers()[1]->value[0], 6.0f);
  q.set_training(false);
  q.forward(Tensor({2}, {0.0f, 100.0f}));
  EXPECT_FLOAT_EQ(q.buffers()[1]->value[0], 6.0f);
  // A calibrated range is frozen even in training mode, until unfrozen.
  q.set_training(true);
  q.set_range(std::vector<float>{-1.0f}, std::vector<float>{2.0f});
  q.forward(Tensor({2}, {0.0f, 100.0f}));
  EXPECT_FLOAT_EQ(q.buffers()[1]->value[0], 2.0f);
  q.unfreeze_range();
  q.forward(Tensor({2}, {-1.0f, 100.0f}));
  EXPECT_FLOAT_EQ(q.buffers()[1]->value[0], 51.0f);
  // set_range checks its arguments.
  EXPECT_THROW(q.set_range(std::vector<float>{2.0f}, std::vector<float>{1.0f}), ArgumentError);
  EXPECT_THROW(q.set_range(std::vector<float>{0.0f, 0.0f}, std::vector<float>{1.0f, 1.0f}), ArgumentError);
  EXPECT_THROW(q.set_range(std::vector<float>{NAN}, std::vector<float>{1.0f}), ArgumentError);
}

TEST(QuantizerRounding, MagicRoundingEqualsNearbyint) {
  // Every half-integer tie in the code range, and random values.
  for (int i = -600; i <= 600; ++i) {
    const float v = static_cast<float>(i) * 0.5f;
    ASSERT_EQ(detail::round_half_even(v), std::nearbyint(v)) << v;
    ASSERT_EQ(detail::floor_small(v), std::floor(v)) << v;
  }
  Rng rng(3);
  for (int i = 0; i < 200000; ++i) {
    const float v = rng.uniform(-300.0f, 300.0f);
    ASSERT_EQ(detail::round_half_even(v), std::nearbyint(v)) << v;
    ASSERT_EQ(detail::floor_small(v), std::floor(v)) << v;
    const float tiny = rng.uniform(-1e-3f, 1e-3f);
    ASSERT_EQ(detail::floor_small(tiny), std::floor(tiny)) << tiny;
  }
  EXPECT_EQ(detail::clamp_nan_low(NAN, -2.0f, 3.0f), -2.0f);
}

}  // namespace
}  // namespace bitmix::quant
