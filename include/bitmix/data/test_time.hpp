#pragma once
// Test-time augmentation views: a classifier evaluated on several views of each image (the image
// translated by a pixel or two, mirrored) and scored by their mean logits. A standard
// short-schedule trick that costs evaluation time only. nn::Trainer::evaluate uses these.

#include <span>
#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/data/loader.hpp"

namespace bitmix::data {

// out(y, x) = in(y + dy, x + dx), pixels brought in from outside the image set to pixel value 0
// (the same translation the training crop makes with offset (dy, dx)); then mirrored
// horizontally when `mirror`.
struct TestTimeView {
  int dy = 0, dx = 0;
  bool mirror = false;
};

// The image itself; with shift > 0 also its translations by (+shift, +shift) and
// (-shift, -shift); with flip, each of these followed by its mirror image. In that order (the
// order the mean logits are summed in).
std::vector<TestTimeView> test_time_views(int shift, bool flip);

// Per channel, the value pixel 0 takes after normalization (-mean / std): the padding of a
// translated view of a normalized batch.
std::vector<float> normalized_zero(const Normalization& normalization);

// The view of a normalized NCHW batch; `pad` holds one value per channel (normalized_zero).
void make_test_time_view(const Tensor& images, const TestTimeView& view, std::span<const float> pad, Tensor& out);

}  // namespace bitmix::data
