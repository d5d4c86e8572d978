// Test-time views: the list evaluate() averages, and each view checked pixel by pixel against
// its definition out(y, x) = in(y + dy, x' + dx) with x' = W - 1 - x when mirrored, pixel 0
// (normalized) outside the image.
#include "bitmix/data/test_time.hpp"

#include <gtest/gtest.h>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"

namespace bitmix::data {
namespace {

TEST(TestTimeViews, ListTheTranslationsEachFollowedByItsMirror) {
  auto describe = [](const std::vector<TestTimeView>& views) {
    std::string s;
    for (const TestTimeView& v : views) s += std::to_string(v.dy) + "," + std::to_string(v.dx) + (v.mirror ? "m " : " ");
    return s;
  };
  EXPECT_EQ(describe(test_time_views(0, false)), "0,0 ");
  EXPECT_EQ(describe(test_time_views(0, true)), "0,0 0,0m ");
  EXPECT_EQ(describe(test_time_views(2, false)), "0,0 2,2 -2,-2 ");
  EXPECT_EQ(describe(test_time_views(1, true)), "0,0 0,0m 1,1 1,1m -1,-1 -1,-1m ");
  EXPECT_THROW(test_time_views(-1, false), ArgumentError);
}

TEST(TestTimeViews, MatchTheirDefinitionPixelByPixel) {
  const int64_t N = 2, C = 3, H = 5, W = 7;
  Tensor images({N, C, H, W});
  Rng rng(3);
  for (float& v : images.values()) v = rng.uniform(-2.0f, 2.0f);
  Normalization n{{0.5f, 0.25f, 0.0f}, {0.5f, 0.125f, 2.0f}};
  const std::vector<float> pad = normalized_zero(n);
  ASSERT_EQ(pad, (std::vector<float>{-1.0f, -2.0f, 0.0f}));
  for (const TestTimeView& view : test_time_views(2, true)) {
    Tensor out;
    make_test_time_view(images, view, pad, out);
    ASSERT_EQ(out.shape(), images.shape());
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) {
            const int64_t sy = y + view.dy, sx = (view.mirror ? W - 1 - x : x) + view.dx;
            const float expected = sy < 0 || sy >= H || sx < 0 || sx >= W
                                       ? pad[static_cast<std::size_t>(c)]
                                       : images.data()[((i * C + c) * H + sy) * W + sx];
            ASSERT_EQ(out.data()[((i * C + c) * H + y) * W + x], expected)
                << view.dy << "," << view.dx << (view.mirror ? " mirrored" : "") << " at " << i << "," << c << ","
                << y << "," << x;
          }
  }
  Tensor out;
  EXPECT_THROW(make_test_time_view(images, {1, 1, false}, std::vector<float>{0.0f}, out), ShapeError);
}

}  // namespace
}  // namespace bitmix::data
