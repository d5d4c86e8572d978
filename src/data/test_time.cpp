#include "bitmix/data/test_time.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "bitmix/core/error.hpp"

namespace bitmix::data {

std::vector<TestTimeView> test_time_views(int shift, bool flip) {
  if (shift < 0) throw ArgumentError(fmt::format("test-time shift {}: expected 0 or more pixels", shift));
  std::vector<TestTimeView> shifts{{0, 0, false}};
  if (shift > 0) {
    shifts.push_back({shift, shift, false});
    shifts.push_back({-shift, -shift, false});
  }
  std::vector<TestTimeView> views;
  for (const TestTimeView& s : shifts) {
    views.push_back(s);
    if (flip) views.push_back({s.dy, s.dx, true});
  }
  return views;
}

std::vector<float> normalized_zero(const Normalization& normalization) {
  std::vector<float> pad;
  for (std::size_t c = 0; c < normalization.mean.size(); ++c)
    pad.push_back(-normalization.mean[c] / normalization.stddev[c]);
  return pad;
}

void make_test_time_view(const Tensor& in, const TestTimeView& view, std::span<const float> pad, Tensor& out) {
  if (in.rank() != 4 || static_cast<int64_t>(pad.size()) != in.dim(1))
    throw ShapeError(fmt::format("test-time view of a batch {} with {} padding values: expected NCHW with one per "
                                 "channel",
                                 shape_to_string(in.shape()), pad.size()));
  const int64_t N = in.dim(0), C = in.dim(1), H = in.dim(2), W = in.dim(3);
  if (out.shape() != in.shape()) out = Tensor(in.shape());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const float p = pad[static_cast<std::size_t>(c)];
      const float* src = in.data() + (n * C + c) * H * W;
      float* dst = out.data() + (n * C + c) * H * W;
      for (int64_t y = 0; y < H; ++y) {
        const int64_t sy = y + view.dy;
        for (int64_t x = 0; x < W; ++x) {
          const int64_t sx = x + view.dx;
          dst[y * W + x] = (sy < 0 || sy >= H || sx < 0 || sx >= W) ? p : src[sy * W + sx];
        }
      }
    }
  if (view.mirror) {
    float* data = out.data();
    for (int64_t row = 0; row < out.numel(); row += W) std::reverse(data + row, data + row + W);
  }
}

}  // namespace bitmix::data
