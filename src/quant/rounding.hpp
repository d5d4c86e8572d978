#pragma once
// Rounding primitives of the quantizers (shared by forward, export and backward, and tested
// against std::nearbyint / std::floor).

namespace bitmix::quant::detail {

// Round half to even for |v| <= 2^22 (callers clamp to the code range first). Equals
// std::nearbyint in the default rounding mode: adding 1.5 * 2^23 leaves no fraction bits, so the
// FPU rounds to an integer with ties to even; subtracting gives it back exactly. Unlike a libm
// call it vectorizes on baseline x86-64. (Requires no -ffast-math, which bitmix never uses.)
inline float round_half_even(float v) noexcept {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

// Floor for |v| <= 2^22, exact, vectorizable.
inline float floor_small(float v) noexcept {
  const float r = round_half_even(v);
  return r > v ? r - 1.0f : r;
}

// Clamp that maps NaN to `lo` (a NaN input then yields a defined code instead of undefined
// behaviour in the integer conversion).
inline float clamp_nan_low(float v, float lo, float hi) noexcept {
  v = v >= lo ? v : lo;
  return v <= hi ? v : hi;
}

}  // namespace bitmix::quant::detail
