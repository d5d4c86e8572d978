// sgemm: every compiled ISA path against a double-precision naive reference, on a grid of
// shapes that covers full tiles, partial tiles, several depth blocks and both transposes.
#include "bitmix/core/sgemm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"

namespace bitmix {
namespace {

std::vector<float> random_vector(std::size_t count, Rng& rng) {
  std::vector<float> v(count);
  for (float& x : v) x = rng.uniform(-1.0f, 1.0f);
  return v;
}

// Checks |got - want| <= 1e-5 * sum_p |a||b| + 1e-6 per entry (float rounding of a length-k sum).
void expect_close(const std::vector<double>& want, const std::vector<double>& scale, const float* got, int64_t m,
                  int64_t n, int64_t ldc, const std::string& what) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double w = want[static_cast<std::size_t>(i * n + j)];
      const double tol = 2e-6 * scale[static_cast<std::size_t>(i * n + j)] + 1e-6;
      ASSERT_NEAR(got[i * ldc + j], w, tol) << what << " at (" << i << ", " << j << ")";
    }
}

class SgemmIsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_available(GetParam())) GTEST_SKIP() << "ISA " << isa_name(GetParam()) << " not available here";
  }
};

TEST_P(SgemmIsaTest, MatchesNaiveReferenceOnShapeGrid) {
  ScopedIsaCap cap(GetParam());
  Rng rng(7);
  const int64_t sizes_m[] = {1, 5, 8, 13, 16, 33, 100};
  const int64_t sizes_n[] = {1, 7, 32, 45, 130};
  const int64_t sizes_k[] = {1, 3, 144, 300, 577};
  int cases = 0;
  for (int64_t m : sizes_m)
    for (int64_t n : sizes_n)
      for (int64_t k : sizes_k) {
        const int variant = cases++;
        const Transpose ta = (variant & 1) ? Transpose::yes : Transpose::no;
        const Transpose tb = (variant & 2) ? Transpose::yes : Transpose::no;
        const float alpha = (variant % 3 == 0) ? 1.0f : -0.75f;
        const float beta = (variant % 4 == 0) ? 0.0f : (variant % 4 == 1 ? 1.0f : 0.5f);
        const int64_t lda = (ta == Transpose::yes ? m : k) + (variant % 5);
        const int64_t ldb = (tb == Transpose::yes ? k : n) + (variant % 3);
        const int64_t ldc = n + (variant % 2) * 3;
        const std::vector<float> a = random_vector(static_cast<std::size_t>((ta == Transpose::yes ? k : m) * lda), rng);
        const std::vector<float> b = random_vector(static_cast<std::size_t>((tb == Transpose::yes ? n : k) * ldb), rng);
        std::vector<float> c = random_vector(static_cast<std::size_t>(m * ldc), rng);
        if (beta == 0.0f)
          for (float& x : c) x = std::numeric_limits<float>::quiet_NaN();  // must not be read
        std::vector<double> want(static_cast<std::size_t>(m * n)), scale(want.size());
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double sum = 0, abs_sum = 0;
            for (int64_t p = 0; p < k; ++p) {
              const double av = ta == Transpose::yes ? a[static_cast<std::size_t>(p * lda + i)] : a[static_cast<std::size_t>(i * lda + p)];
              const double bv = tb == Transpose::yes ? b[static_cast<std::size_t>(j * ldb + p)] : b[static_cast<std::size_t>(p * ldb + j)];
              sum += av * bv;
              abs_sum += std::abs(av * bv);
            }
            const double old = beta == 0.0f ? 0.0 : double{c[static_cast<std::size_t>(i * ldc + j)]};
            const double al = alpha, be = beta;
            want[static_cast<std::size_t>(i * n + j)] = al * sum + be * old;
            scale[static_cast<std::size_t>(i * n + j)] = std::abs(al) * abs_sum + std::abs(be * old);
          }
        sgemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
        expect_close(want, scale, c.data(), m, n, ldc,
                     "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
      }
}

// A 3x3 convolution of a zero-padded image through the indexed-B entry point: B is the im2col
// matrix, described by offsets into the padded planes (stride 1 and 2).
TEST_P(SgemmIsaTest, PackedAIndexedBComputesConvolution) {
  ScopedIsaCap cap(GetParam());
  Rng rng(11);
  for (int stride : {1, 2}) {
    for (int64_t width : {7, 8, 32, 40}) {
      const int64_t channels = 5, out_channels = 19, height = width - 1, kernel = 3, pad = 1;
      const int64_t ph = height + 2 * pad, pw = width + 2 * pad;
      const int64_t oh = (height + 2 * pad - kernel) / stride + 1, ow = (width + 2 * pad - kernel) / stride + 1;
      std::vector<float> padded(static_cast<std::size_t>(channels * ph * pw), 0.0f);
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t y = 0; y < height; ++y)
          for (int64_t x = 0; x < width; ++x)
            padded[static_cast<std::size_t>(c * ph * pw + (y + pad) * pw + x + pad)] = rng.uniform(-1.0f, 1.0f);
      const int64_t depth = channels * kernel * kernel;
      const std::vector<float> weights = random_vector(static_cast<std::size_t>(out_channels * depth), rng);
      std::vector<int64_t> rows, cols;
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t i = 0; i < kernel; ++i)
          for (int64_t j = 0; j < kernel; ++j) rows.push_back(c * ph * pw + i * pw + j);
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t x = 0; x < ow; ++x) cols.push_back(y * stride * pw + x * stride);
      const SgemmPackedA packed(Transpose::no, out_channels, depth, weights.data(), depth);
      EXPECT_EQ(packed.isa(), GetParam());
      std::vector<float> out(static_cast<std::size_t>(out_channels * oh * ow), 0.25f);
      sgemm(packed, SgemmIndexedB{padded.data(), rows, cols}, 1.0f, 2.0f, out.data(), oh * ow);
      std::vector<double> want(out.size()), scale(out.size());
      for (int64_t o = 0; o < out_channels; ++o)
        for (int64_t y = 0; y < oh; ++y)
          for (int64_t x = 0; x < ow; ++x) {
            double sum = 0.5, abs_sum = 0.5;  // 2.0 * 0.25 from beta
            for (int64_t c = 0; c < channels; ++c)
              for (int64_t i = 0; i < kernel; ++i)
                for (int64_t j = 0; j < kernel; ++j) {
                  const double w = weights[static_cast<std::size_t>(o * depth + (c * kernel + i) * kernel + j)];
                  const double v = padded[static_cast<std::size_t>(c * ph * pw + (y * stride + i) * pw + x * stride + j)];
                  sum += w * v;
                  abs_sum += std::abs(w * v);
                }
            want[static_cast<std::size_t>((o * oh + y) * ow + x)] = sum;
            scale[static_cast<std::size_t>((o * oh + y) * ow + x)] = abs_sum;
          }
      expect_close(want, scale, out.data(), out_channels, oh * ow, oh * ow,
                   "stride " + std::to_string(stride) + " width " + std::to_string(width));
    }
  }
}

TEST_P(SgemmIsaTest, DotRowsMatchesNaiveReference) {
  ScopedIsaCap cap(GetParam());
  Rng rng(13);
  for (int64_t length : {1, 15, 16, 80, 1088}) {
    for (int64_t segments : {1, 3, 40}) {
      const int64_t m = 6, n = 11;
      std::vector<std::vector<float>> a_data, b_data;
      std::vector<const float*> a_rows, b_rows;
      for (int64_t s = 0; s < segments; ++s) {
        for (int64_t i = 0; i < m; ++i) a_data.push_back(random_vector(static_cast<std::size_t>(length), rng));
        for (int64_t j = 0; j < n; ++j) b_data.push_back(random_vector(static_cast<std::size_t>(length), rng));
      }
      for (auto& row : a_data) a_rows.push_back(row.data());
      for (auto& row : b_data) b_rows.push_back(row.data());
      const int64_t ldc = n + 2;
      std::vector<float> c = random_vector(static_cast<std::size_t>(m * ldc), rng);
      std::vector<double> want(static_cast<std::size_t>(m * n)), scale(want.size());
      const float alpha = 0.5f, beta = 1.0f;
      const double al = alpha, be = beta;
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double sum = 0, abs_sum = 0;
          for (int64_t s = 0; s < segments; ++s)
            for (int64_t l = 0; l < length; ++l) {
              const double p = double{a_rows[static_cast<std::size_t>(s * m + i)][l]} * double{b_rows[static_cast<std::size_t>(s * n + j)][l]};
              sum += p;
              abs_sum += std::abs(p);
            }
          const double old = c[static_cast<std::size_t>(i * ldc + j)];
          want[static_cast<std::size_t>(i * n + j)] = al * sum + be * old;
          scale[static_cast<std::size_t>(i * n + j)] = al * abs_sum + std::abs(old);
        }
      sgemm_dot_rows(m, n, length, segments, a_rows, b_rows, alpha, beta, c.data(), ldc);
      expect_close(want, scale, c.data(), m, n, ldc,
                   "length " + std::to_string(length) + " segments " + std::to_string(segments));
    }
  }
}

// The depth is never split across threads, so any thread count gives identical bits.
TEST_P(SgemmIsaTest, ResultDoesNotDependOnThreadCount) {
  ScopedIsaCap cap(GetParam());
  Rng rng(17);
  const int64_t m = 70, n = 300, k = 600;
  const std::vector<float> a = random_vector(static_cast<std::size_t>(m * k), rng);
  const std::vector<float> b = random_vector(static_cast<std::size_t>(k * n), rng);
  const int saved = num_threads();
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    std::vector<float> c(static_cast<std::size_t>(m * n));
    sgemm(Transpose::no, Transpose::no, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
    results.push_back(c);
  }
  set_num_threads(saved);
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, SgemmIsaTest, ::testing::Values(Isa::scalar, Isa::avx2, Isa::avx512),
                         [](const ::testing::TestParamInfo<Isa>& param_info) { return std::string(isa_name(param_info.param)); });

TEST(Sgemm, EmptyDepthScalesC) {
  std::vector<float> c = {1, 2, 3, 4};
  sgemm(Transpose::no, Transpose::no, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{0.5f, 1, 1.5f, 2}));
}

TEST(Sgemm, RejectsBadArguments) {
  std::vector<float> a(16), b(16), c(16);
  EXPECT_THROW(sgemm(Transpose::no, Transpose::no, -1, 2, 2, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2),
               ArgumentError);
  EXPECT_THROW(sgemm(Transpose::no, Transpose::no, 2, 2, 4, 1.0f, a.data(), 3, b.data(), 2, 0.0f, c.data(), 2),
               ArgumentError);
  EXPECT_THROW(sgemm(Transpose::no, Transpose::no, 2, 4, 2, 1.0f, a.data(), 2, b.data(), 4, 0.0f, c.data(), 3),
               ArgumentError);
  const SgemmPackedA packed(Transpose::no, 2, 3, a.data(), 3);
  const std::vector<int64_t> rows = {0, 1}, cols = {0, 1};
  EXPECT_THROW(sgemm(packed, SgemmIndexedB{b.data(), rows, cols}, 1.0f, 0.0f, c.data(), 2), ArgumentError);
  std::vector<const float*> too_few = {a.data()};
  EXPECT_THROW(sgemm_dot_rows(2, 2, 4, 1, too_few, too_few, 1.0f, 0.0f, c.data(), 2), ArgumentError);
}

}  // namespace
}  // namespace bitmix
