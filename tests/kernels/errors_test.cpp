// The checked entry points raise bitmix::Error subclasses naming what is wrong.
#include <gtest/gtest.h>

#include "bitmix/core/error.hpp"
#include "kernel_test_util.hpp"

namespace bitmix::kernels {
namespace {

template <typename E, typename F>
void expect_error_mentioning(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ConvErrors, BadArgumentsRaiseBitmixErrors) {
  Rng rng(1);
  const PackedActivations x = testing::random_activations(rng, 1, 8, 6, 6, 2, 0);
  const PackedWeights w = testing::random_weights(rng, {4, 8, 3, 3, 2, WeightEncoding::twos_complement, false});
  const Epilogue e = Epilogue::identity(4);
  Tensor out;
  PackedActivations packed;
  expect_error_mentioning<ArgumentError>([&] { conv2d(x, w, Conv2dParams{1, 1, 1, 1}, e, out); }, "border");
  expect_error_mentioning<ArgumentError>([&] { conv2d(x, w, Conv2dParams{0, 1, 0, 0}, e, out); }, "stride");
  expect_error_mentioning<ShapeError>([&] { conv2d(x, w, Conv2dParams{}, Epilogue::identity(5), out); }, "epilogue");
  expect_error_mentioning<ArgumentError>([&] { conv2d(x, w, Conv2dParams{}, e, packed); }, "requantizing");
  const Epilogue rq = Epilogue::requantize({1, 1, 1, 1}, {0, 0, 0, 0}, false, ActivationQuant{2, 1.0f, 0});
  expect_error_mentioning<ArgumentError>([&] { conv2d(x, w, Conv2dParams{}, rq, out); }, "float epilogue");
  const PackedWeights w5 = testing::random_weights(rng, {4, 5, 3, 3, 2, WeightEncoding::twos_complement, false});
  expect_error_mentioning<ShapeError>([&] { conv2d(x, w5, Conv2dParams{}, e, out); }, "input channels");
  const PackedWeights big = testing::random_weights(rng, {4, 8, 7, 7, 2, WeightEncoding::twos_complement, false});
  expect_error_mentioning<ShapeError>([&] { conv2d(x, big, Conv2dParams{}, e, out); }, "does not fit");
  expect_error_mentioning<ArgumentError>([&] { conv2d(PackedActivations{}, w, Conv2dParams{}, e, out); }, "empty");
  expect_error_mentioning<ArgumentError>([&] { gemm(x, w, e, out); }, "1x1");
  const PackedWeights w1 = testing::random_weights(rng, {4, 8, 1, 1, 2, WeightEncoding::twos_complement, false});
  expect_error_mentioning<ShapeError>([&] { gemm(x, w1, e, out); }, "[N, K, 1, 1]");
  PackedActivations self = testing::random_activations(rng, 1, 8, 6, 6, 2, 0);
  expect_error_mentioning<ArgumentError>([&] { conv2d(self, w1, Conv2dParams{}, rq, self); }, "must not be the input");
}

TEST(ConvErrors, ReductionsThatCouldOverflowInt32AreRefused) {
  // 8-bit x 8-bit: the limit is (2^31 - 2) >> 17 = 16383 terms; 2048 channels x 3x3 exceed it.
  Rng rng(2);
  const PackedActivations x = testing::random_activations(rng, 1, 2048, 3, 3, 8, 0);
  const PackedWeights w = testing::random_weights(rng, {1, 2048, 3, 3, 8, WeightEncoding::twos_complement, false});
  Tensor out;
  expect_error_mentioning<ArgumentError>([&] { conv2d(x, w, Conv2dParams{}, Epilogue::identity(1), out); }, "overflow");
  // The same reduction at 1 bit x 1 bit is fine.
  const PackedActivations x1 = testing::random_activations(rng, 1, 2048, 3, 3, 1, 0);
  const PackedWeights w1 = testing::random_weights(rng, {1, 2048, 3, 3, 1, WeightEncoding::odd_levels, false});
  EXPECT_NO_THROW(conv2d(x1, w1, Conv2dParams{}, Epilogue::identity(1), out));
}

}  // namespace
}  // namespace bitmix::kernels
