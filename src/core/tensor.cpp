#include "bitmix/core/tensor.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "bitmix/core/error.hpp"

namespace bitmix {

std::string shape_to_string(const Shape& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

int64_t shape_numel(const Shape& shape) {
  int64_t count = 1;
  for (int64_t extent : shape) {
    if (extent < 0) throw ShapeError(fmt::format("shape {} has a negative extent", shape_to_string(shape)));
    if (extent != 0 && count > std::numeric_limits<int64_t>::max() / extent)
      throw ShapeError(fmt::format("shape {} has too many elements", shape_to_string(shape)));
    count *= extent;
  }
  return count;
}

Tensor::Tensor(Shape shape) : shape_(std::move(shape)) {
  data_.assign(static_cast<std::size_t>(shape_numel(shape_)), 0.0f);
}

Tensor::Tensor(Shape shape, float fill_value) : shape_(std::move(shape)) {
  data_.assign(static_cast<std::size_t>(shape_numel(shape_)), fill_value);
}

Tensor::Tensor(Shape shape, std::span<const float> values) : shape_(std::move(shape)) {
  const int64_t count = shape_numel(shape_);
  if (static_cast<int64_t>(values.size()) != count)
    throw ShapeError(fmt::format("Tensor: shape {} needs {} values, got {}", shape_to_string(shape_),
                                 count, values.size()));
  data_.assign(values.begin(), values.end());
}

Tensor::Tensor(Shape shape, std::initializer_list<float> values)
    : Tensor(std::move(shape), std::span<const float>(values.begin(), values.size())) {}

int64_t Tensor::dim(int axis) const {
  const int r = rank();
  const int a = axis < 0 ? axis + r : axis;
  if (a < 0 || a >= r)
    throw ShapeError(fmt::format("Tensor::dim({}) on a tensor of shape {}", axis, shape_to_string(shape_)));
  return shape_[static_cast<std::size_t>(a)];
}

int64_t Tensor::checked_offset(std::initializer_list<int64_t> index) const {
  if (static_cast<int>(index.size()) != rank())
    throw ShapeError(fmt::format("Tensor::at with {} indices on a tensor of rank {} (shape {})", index.size(),
                                 rank(), shape_to_string(shape_)));
  int64_t offset = 0;
  std::size_t axis = 0;
  for (int64_t i : index) {
    const int64_t extent = shape_[axis];
    if (i < 0 || i >= extent)
      throw ShapeError(fmt::format("Tensor::at: index {} out of range for axis {} of shape {}", i, axis,
                                   shape_to_string(shape_)));
    offset = offset * extent + i;
    ++axis;
  }
  return offset;
}

float& Tensor::at(int64_t i) {
  if (i < 0 || i >= numel())
    throw ShapeError(fmt::format("Tensor::at: flat index {} out of range for {} elements (shape {})", i, numel(),
                                 shape_to_string(shape_)));
  return data_[static_cast<std::size_t>(i)];
}
float Tensor::at(int64_t i) const { return const_cast<Tensor*>(this)->at(i); }
float& Tensor::at(int64_t i0, int64_t i1) { return data_[static_cast<std::size_t>(checked_offset({i0, i1}))]; }
float Tensor::at(int64_t i0, int64_t i1) const { return const_cast<Tensor*>(this)->at(i0, i1); }
float& Tensor::at(int64_t n, int64_t c, int64_t h, int64_t w) {
  return data_[static_cast<std::size_t>(checked_offset({n, c, h, w}))];
}
float Tensor::at(int64_t n, int64_t c, int64_t h, int64_t w) const {
  return const_cast<Tensor*>(this)->at(n, c, h, w);
}

void Tensor::reshape(Shape new_shape) {
  int infer_axis = -1;
  int64_t known = 1;
  for (std::size_t i = 0; i < new_shape.size(); ++i) {
    if (new_shape[i] == -1) {
      if (infer_axis >= 0)
        throw ShapeError(fmt::format("reshape to {}: at most one extent may be -1", shape_to_string(new_shape)));
      infer_axis = static_cast<int>(i);
    } else if (new_shape[i] < 0) {
      throw ShapeError(fmt::format("reshape to {}: negative extent", shape_to_string(new_shape)));
    } else {
      known *= new_shape[i];
    }
  }
  if (infer_axis >= 0) {
    if (known == 0 || numel() % known != 0)
      throw ShapeError(fmt::format("cannot reshape {} ({} elements) to {}", shape_to_string(shape_), numel(),
                                   shape_to_string(new_shape)));
    new_shape[static_cast<std::size_t>(infer_axis)] = numel() / known;
  }
  if (shape_numel(new_shape) != numel())
    throw ShapeError(fmt::format("cannot reshape {} ({} elements) to {}", shape_to_string(shape_), numel(),
                                 shape_to_string(new_shape)));
  shape_ = std::move(new_shape);
}

Tensor Tensor::reshaped(Shape new_shape) const& {
  Tensor copy = *this;
  copy.reshape(std::move(new_shape));
  return copy;
}

Tensor Tensor::reshaped(Shape new_shape) && {
  reshape(std::move(new_shape));
  return std::move(*this);
}

void Tensor::fill(float value) noexcept { std::fill(data_.begin(), data_.end(), value); }

void Tensor::expect_shape(const Shape& expected, const std::string& what) const {
  if (shape_ != expected)
    throw ShapeError(fmt::format("{}: expected shape {}, got {}", what, shape_to_string(expected),
                                 shape_to_string(shape_)));
}

}  // namespace bitmix
