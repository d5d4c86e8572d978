// Session against the reference interpreter of runtime_test_util.hpp: every intermediate value
// and the logits, bit for bit, on every compiled kernel path.
#include "bitmix/runtime/session.hpp"

#include <gtest/gtest.h>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "runtime/runtime_test_util.hpp"

namespace bitmix::runtime {
namespace {

using testing::make_test_model;
using testing::random_images;
using testing::reference_run;
using testing::same_floats;

void expect_matches_reference(const testing::TestModel& tm, Session& session, const Tensor& images, bool normalized) {
  const Tensor logits = normalized ? session.run_normalized(images) : session.run(images);
  const std::vector<testing::RefValue> ref = reference_run(tm, images, normalized);
  const Model& m = tm.model;
  for (const Op& op : m.ops()) {
    const testing::RefValue& r = ref[static_cast<std::size_t>(op.output)];
    if (m.values()[static_cast<std::size_t>(op.output)].kind == ValueKind::packed) {
      const std::vector<uint8_t> codes = session.packed_value(op.output).codes();
      ASSERT_EQ(codes.size(), r.codes.size()) << op.name;
      for (std::size_t i = 0; i < codes.size(); ++i)
        ASSERT_EQ(int{codes[i]}, r.codes[i]) << op.name << " element " << i;
    } else if (op.output != m.output()) {
      const Tensor& v = session.real_value(op.output);
      ASSERT_EQ(v.numel(), static_cast<int64_t>(r.real.size())) << op.name;
      ASSERT_TRUE(same_floats(v.data(), r.real.data(), v.numel())) << op.name;
    }
  }
  const testing::RefValue& out = ref[static_cast<std::size_t>(m.output())];
  ASSERT_EQ(logits.shape(), (Shape{images.dim(0), 5}));
  EXPECT_TRUE(same_floats(logits.data(), out.real.data(), logits.numel()));
}

class SessionPaths : public ::testing::TestWithParam<Isa> {};

TEST_P(SessionPaths, EveryValueMatchesTheReferenceInterpreter) {
  if (!isa_available(GetParam())) GTEST_SKIP() << isa_name(GetParam()) << " not available";
  ScopedIsaCap cap(GetParam());
  for (uint64_t seed : {1, 2, 3}) {
    const testing::TestModel tm = make_test_model(seed);
    Session session(tm.model, SessionOptions{true});
    Rng rng(seed + 100);
    for (int64_t batch : {1, 3}) {
      SCOPED_TRACE(::testing::Message() << "seed " << seed << " batch " << batch);
      expect_matches_reference(tm, session, random_images(rng, {batch, 3, 9, 10}), false);
      // Normalized inputs outside the signed grid exercise the restricted code range.
      Tensor normalized = random_images(rng, {batch, 3, 9, 10});
      for (int64_t i = 0; i < normalized.numel(); ++i) normalized[i] = (normalized[i] - 0.5f) * 12.0f;
      expect_matches_reference(tm, session, normalized, true);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Runtime, SessionPaths, ::testing::Values(Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon),
                         [](const ::testing::TestParamInfo<Isa>& p) { return std::string(isa_name(p.param)); });

TEST(Session, FloatGemmPoliciesGiveTheReferenceLogits) {
  const testing::TestModel tm = make_test_model(31);
  Rng rng(32);
  const Tensor images = random_images(rng, {3, 3, 9, 10});
  const std::vector<testing::RefValue> ref = reference_run(tm, images, false);
  const testing::RefValue& expected = ref[static_cast<std::size_t>(tm.model.output())];
  int dense_counts[3] = {0, 0, 0};
  int k = 0;
  for (FloatGemmPolicy policy : {FloatGemmPolicy::never, FloatGemmPolicy::narrow_inputs, FloatGemmPolicy::when_exact}) {
    SessionOptions o;
    o.float_gemm = policy;
    Session session(tm.model, o);
    for (std::size_t i = 0; i < tm.model.ops().size(); ++i) dense_counts[k] += session.runs_as_float_gemm(i);
    for (int64_t threads : {1, 2}) {
      const int saved = num_threads();
      set_num_threads(static_cast<int>(threads));
      const Tensor logits = session.run(images);
      set_num_threads(saved);
      EXPECT_TRUE(same_floats(logits.data(), expected.real.data(), logits.numel()))
          << "policy " << static_cast<int>(policy) << ", " << threads << " threads";
    }
    ++k;
  }
  EXPECT_EQ(dense_counts[0], 0);
  EXPECT_EQ(dense_counts[1], 1);  // the stem: 3 input channels
  EXPECT_GT(dense_counts[2], 1);  // the narrow layers whose accumulators stay exact
  Session narrow(tm.model);
  EXPECT_TRUE(narrow.skips(0));   // the stem's quantize op: its only consumer runs as a GEMM
  EXPECT_TRUE(narrow.runs_as_float_gemm(1));
}

TEST(Session, SharedBuffersGiveTheSameLogitsAsKeptValues) {
  const testing::TestModel tm = make_test_model(7);
  Session shared(tm.model);
  Session kept(tm.model, SessionOptions{true});
  Rng rng(8);
  for (int64_t batch : {2, 1, 4, 2}) {  // batch changes reallocate buffers
    const Tensor images = random_images(rng, {batch, 3, 9, 10});
    const Tensor a = shared.run(images);
    const Tensor b = kept.run(images);
    ASSERT_TRUE(same_floats(a.data(), b.data(), a.numel())) << "batch " << batch;
  }
  EXPECT_THROW(shared.real_value(2), ArgumentError);  // no keep_values
}

TEST(Session, ImagesOneByOneEqualTheBatchAndThreadCountsAgree) {
  const testing::TestModel tm = make_test_model(9);
  Rng rng(10);
  const Tensor images = random_images(rng, {5, 3, 9, 10});
  Session session(tm.model);
  const Tensor batch = session.run(images);
  for (int64_t i = 0; i < 5; ++i) {
    Tensor one({3, 9, 10});
    std::copy(images.data() + i * 270, images.data() + (i + 1) * 270, one.data());
    const Tensor logits = session.run(one);  // [C, H, W] is one image
    ASSERT_EQ(logits.shape(), (Shape{1, 5}));
    EXPECT_TRUE(same_floats(logits.data(), batch.data() + i * 5, 5)) << "image " << i;
  }
  const int threads = num_threads();
  set_num_threads(1);
  const Tensor single = session.run(images);
  set_num_threads(threads);
  EXPECT_TRUE(same_floats(single.data(), batch.data(), batch.numel()));
}

TEST(Session, RunAndRunNormalizedAgree) {
  const testing::TestModel tm = make_test_model(11);
  Rng rng(12);
  const Tensor images = random_images(rng, {3, 3, 9, 10});
  Tensor normalized = images;
  const ModelInfo& info = tm.model.info();
  for (int64_t i = 0; i < normalized.numel(); ++i) {
    const auto c = static_cast<std::size_t>((i / 90) % 3);
    normalized[i] = (images[i] - info.mean[c]) / info.stddev[c];
  }
  Session session(tm.model);
  const Tensor a = session.run(images);
  const Tensor b = session.run_normalized(normalized);
  EXPECT_TRUE(same_floats(a.data(), b.data(), a.numel()));
}

TEST(Session, WrongInputShapesNameTheExpectedShape) {
  const testing::TestModel tm = make_test_model(13);
  Session session(tm.model);
  for (const Shape& bad : {Shape{1, 3, 10, 9}, Shape{2, 1, 9, 10}, Shape{3, 9}, Shape{0, 3, 9, 10}}) {
    try {
      session.run(Tensor(bad));
      ADD_FAILURE() << "accepted " << shape_to_string(bad);
    } catch (const ShapeError& e) {
      EXPECT_NE(std::string(e.what()).find("[N, 3, 9, 10]"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(Session(Model{}), ArgumentError);
}

TEST(Session, TimingsCountEveryOp) {
  const testing::TestModel tm = make_test_model(14);
  Session session(tm.model);
  Rng rng(15);
  const Tensor images = random_images(rng, {2, 3, 9, 10});
  session.run(images);
  session.run(images);
  ASSERT_EQ(session.timings().size(), tm.model.ops().size());
  double sum = 0;
  for (const OpTiming& t : session.timings()) {
    EXPECT_EQ(t.calls, 2);
    EXPECT_GE(t.total_seconds, t.last_seconds);
    sum += t.last_seconds;
  }
  EXPECT_LE(sum, session.last_run_seconds() * 1.0001 + 1e-6);
  session.reset_timings();
  for (const OpTiming& t : session.timings()) EXPECT_EQ(t.calls, 0);
}

TEST(Session, PredictionsTakeTheFirstMaximum) {
  Tensor logits({2, 3});
  const float values[] = {0.5f, 2.0f, 2.0f, -1.0f, -3.0f, -2.0f};
  std::copy(values, values + 6, logits.data());
  EXPECT_EQ(predictions(logits), (std::vector<int>{1, 0}));
  EXPECT_THROW(predictions(Tensor({3})), ShapeError);
}

}  // namespace
}  // namespace bitmix::runtime
