#pragma once
// Tensor: a dense float32 array in row-major order (NCHW for images), 64-byte aligned.
//
// A Tensor owns its data and has value semantics: copying copies the data, moving is cheap.
// operator[] and data() are unchecked (for hot loops); at() checks every index and throws
// bitmix::ShapeError naming the index and the shape.

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "bitmix/core/aligned.hpp"

namespace bitmix {

using Shape = std::vector<int64_t>;

// "[2, 3, 32, 32]"
std::string shape_to_string(const Shape& shape);
// Product of the extents; throws ShapeError on a negative extent or overflow.
int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // A zero-filled tensor of the given shape.
  explicit Tensor(Shape shape);
  Tensor(Shape shape, float fill_value);
  // A tensor holding a copy of `values`; throws ShapeError if the count does not match.
  Tensor(Shape shape, std::span<const float> values);
  Tensor(Shape shape, std::initializer_list<float> values);

  static Tensor zeros(Shape shape) { return Tensor(std::move(shape)); }
  static Tensor full(Shape shape, float value) { return Tensor(std::move(shape), value); }
  static Tensor zeros_like(const Tensor& other) { return Tensor(other.shape()); }

  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return static_cast<int>(shape_.size()); }
  // Extent of dimension `axis`; negative axes count from the end. Checked.
  int64_t dim(int axis) const;
  int64_t numel() const noexcept { return static_cast<int64_t>(data_.size()); }
  bool empty() const noexcept { return data_.empty(); }
  std::size_t bytes() const noexcept { return data_.size() * sizeof(float); }

  float* data() noexcept { return data_.data(); }
  const float* data() const noexcept { return data_.data(); }
  std::span<float> values() noexcept { return {data_.data(), data_.size()}; }
  std::span<const float> values() const noexcept { return {data_.data(), data_.size()}; }

  // Unchecked flat access.
  float& operator[](int64_t i) noexcept { return data_[static_cast<std::size_t>(i)]; }
  float operator[](int64_t i) const noexcept { return data_[static_cast<std::size_t>(i)]; }

  // Checked flat and multi-dimensional access.
  float& at(int64_t i);
  float at(int64_t i) const;
  float& at(int64_t i0, int64_t i1);
  float at(int64_t i0, int64_t i1) const;
  float& at(int64_t n, int64_t c, int64_t h, int64_t w);
  float at(int64_t n, int64_t c, int64_t h, int64_t w) const;

  // Same data, new shape with the same element count (one extent may be -1). Throws ShapeError.
  void reshape(Shape new_shape);
  Tensor reshaped(Shape new_shape) const&;
  Tensor reshaped(Shape new_shape) &&;

  void fill(float value) noexcept;
  void zero() noexcept { fill(0.0f); }

  bool same_shape(const Tensor& other) const noexcept { return shape_ == other.shape_; }
  // Throws ShapeError("<what>: expected shape [..], got [..]") unless the shape is `expected`.
  void expect_shape(const Shape& expected, const std::string& what) const;

 private:
  int64_t checked_offset(std::initializer_list<int64_t> index) const;

  Shape shape_;
  AlignedVector<float> data_;
};

}  // namespace bitmix
