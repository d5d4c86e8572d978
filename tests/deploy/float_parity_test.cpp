// The integer runtime's float operations against bitmix::nn's evaluation forward, bit for bit,
// on random (not dyadic) values: every residual addition (identity, option A, after a
// projection), max pooling and global average pooling of the runtime's test model, recomputed by
// nn's layers and functions from the very inputs the session read. The two call the same
// primitives (core float_ops), and this pins that down through the public APIs.
//
// The first convolution and the classifier are not float operations in the runtime (an exact
// integer-valued float GEMM and the kernels' integer GEMM, each with the kernels' epilogue), so
// they cannot agree with the fake-quant float convolution bit for bit on ordinary values; their
// exact parity with dyadic parameters is tested end to end in compile_test.cpp.
#include <gtest/gtest.h>

#include <cstring>

#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/runtime/session.hpp"
#include "runtime/runtime_test_util.hpp"

namespace bitmix::deploy {
namespace {

using runtime::AddParams;
using runtime::Op;
using runtime::OpKind;
using runtime::ShortcutKind;

// nn's option-A shortcut of a BasicBlock: the input subsampled and zero-padded in channels.
Tensor option_a_shortcut(const Tensor& input, const AddParams& a, const Shape& branch) {
  const int64_t n = input.dim(0), cin = input.dim(1), h = input.dim(2), w = input.dim(3);
  const int64_t cout = branch[1], oh = branch[2], ow = branch[3];
  Tensor out({n, cout, oh, ow});
  for (int64_t img = 0; img < n; ++img)
    for (int64_t c = 0; c < cout; ++c) {
      const int64_t sc = c - a.channel_offset;
      if (sc < 0 || sc >= cin) continue;  // zero channel
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t x = 0; x < ow; ++x)
          out[((img * cout + c) * oh + y) * ow + x] = input[((img * cin + sc) * h + y * a.stride) * w + x * a.stride];
    }
  return out;
}

::testing::AssertionResult same_bits(const Tensor& a, const Tensor& b) {
  if (a.numel() != b.numel())
    return ::testing::AssertionFailure() << a.numel() << " elements vs " << b.numel();
  return runtime::testing::same_floats(a.data(), b.data(), a.numel());
}

TEST(FloatParity, RuntimeAddsAndPoolsAreNnsEvaluationForwardBitForBit) {
  int checked[3] = {0, 0, 0};  // adds, max pools, average pools
  for (uint64_t seed : {1, 2, 3}) {
    const runtime::testing::TestModel tm = runtime::testing::make_test_model(seed);
    runtime::SessionOptions options;
    options.keep_values = true;
    runtime::Session session(tm.model, options);
    Rng rng(seed + 50);
    for (int64_t batch : {1, 4}) {
      SCOPED_TRACE(::testing::Message() << "seed " << seed << " batch " << batch);
      const Tensor images = runtime::testing::random_images(rng, {batch, 3, 9, 10});
      session.run(images);
      auto value = [&](int32_t id) -> const Tensor& { return id == 0 ? images : session.real_value(id); };
      for (const Op& op : tm.model.ops()) {
        SCOPED_TRACE(op.name);
        if (op.kind == OpKind::add) {
          const AddParams& a = op.add();
          const Tensor& branch = value(op.inputs[0]);
          const Tensor shortcut = a.shortcut == ShortcutKind::identity
                                      ? value(op.inputs[1])
                                      : option_a_shortcut(value(op.inputs[1]), a, branch.shape());
          Tensor sum, out;
          nn::add_forward(branch, shortcut, sum);
          if (a.relu) nn::relu_forward(sum, out);
          else out = sum;
          EXPECT_TRUE(same_bits(session.real_value(op.output), out));
          ++checked[0];
        } else if (op.kind == OpKind::max_pool) {
          const runtime::PoolParams& p = op.pool();
          nn::MaxPool2d pool(nn::Pool2dOptions::square(p.kernel, p.stride, p.padding));
          EXPECT_TRUE(same_bits(session.real_value(op.output), pool.forward(value(op.inputs[0]))));
          ++checked[1];
        } else if (op.kind == OpKind::global_avg_pool) {
          nn::GlobalAvgPool2d pool;
          EXPECT_TRUE(same_bits(session.real_value(op.output), pool.forward(value(op.inputs[0]))));
          ++checked[2];
        }
      }
    }
  }
  // Every seed's model has three additions (identity, option A, projection) and one pool of each.
  EXPECT_EQ(checked[0], 3 * 2 * 3);
  EXPECT_EQ(checked[1], 3 * 2);
  EXPECT_EQ(checked[2], 3 * 2);
}

}  // namespace
}  // namespace bitmix::deploy
