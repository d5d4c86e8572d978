#pragma once
// Packed K-bit activations: the operand the bit-serial kernels read and the requantizing
// epilogue writes.
//
// An activation x is stored as an unsigned K-bit code with a per-tensor scale s and zero point z:
//     code = clamp(nearbyint(x / s) + z, 0, 2^K - 1)        (round half to even; NaN -> 0)
// or, with ActivationQuant::reciprocal, nearbyint(x * (1.0f / s)) in place of nearbyint(x / s):
// the form bitmix::quant's range quantizers compute, so a runtime can match them bit for bit.
// and stands for the real value (code - z) * s. The quant module uses exactly this convention.
//
// Layout (see docs/kernels.md): for each image n, each stored row r of the (H + 2*border) rows,
// each bit plane j of the K planes, one row bit stream of (W + 2*border) pixels; pixel x occupies
// bits [x*Cs, x*Cs + C) of that stream (bit b lives in byte b/8 at bit b%8), where
// Cs = round_up(C, 8), and the Cs - C padding bits are zero. Border pixels hold the zero-point
// code z: they are the convolution's zero padding (real zeros), so a convolution with padding
// p <= border reads them like any other pixel.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "bitmix/core/aligned.hpp"
#include "bitmix/core/tensor.hpp"

namespace bitmix::kernels {

// Per-tensor affine quantization of activations to unsigned codes.
struct ActivationQuant {
  int bits = 8;             // K, 1..8
  float scale = 1.0f;       // s, finite and > 0
  int32_t zero_point = 0;   // z, in [0, 2^bits - 1]
  // false: x / s; true: x * r with r = 1.0f / s rounded to float (one multiply, as quant's
  // engine does). Both round half to even afterwards; they differ only next to a rounding tie.
  bool reciprocal = false;

  int32_t max_code() const noexcept { return (1 << bits) - 1; }
  friend bool operator==(const ActivationQuant&, const ActivationQuant&) = default;
};

// Throws ArgumentError naming `what` unless bits in 1..8, scale finite and > 0, and zero_point
// in [0, 2^bits - 1].
void validate(const ActivationQuant& quant, std::string_view what);

// The one definition of the activation code: clamp(nearbyint(x / scale) + zero_point, 0, 2^bits-1)
// (x * (1.0f / scale) when quant.reciprocal) computed in float with round-half-to-even; NaN gives
// 0. `quant` is not validated here.
uint8_t quantize_code(float x, const ActivationQuant& quant) noexcept;

class PackedActivations {
 public:
  PackedActivations() = default;
  // [batch, channels, height, width] codes, every code (border included) set to the zero point.
  // Throws ArgumentError/ShapeError on bad quantization parameters, negative or zero extents,
  // a negative border, or a size that does not fit in memory indexing.
  PackedActivations(int64_t batch, int64_t channels, int64_t height, int64_t width,
                    const ActivationQuant& quant, int border = 0);

  // Packs codes given in NCHW order (interior only; the border gets the zero point). Throws
  // ShapeError if codes.size() != batch*channels*height*width, ArgumentError if a code exceeds
  // 2^bits - 1.
  static PackedActivations from_codes(std::span<const uint8_t> codes, int64_t batch, int64_t channels,
                                      int64_t height, int64_t width, const ActivationQuant& quant,
                                      int border = 0);

  int64_t batch() const noexcept { return batch_; }
  int64_t channels() const noexcept { return channels_; }
  int64_t height() const noexcept { return height_; }
  int64_t width() const noexcept { return width_; }
  int border() const noexcept { return border_; }
  int bits() const noexcept { return quant_.bits; }
  const ActivationQuant& quant() const noexcept { return quant_; }
  Shape shape() const { return {batch_, channels_, height_, width_}; }
  bool empty() const noexcept { return storage_.empty(); }

  // Checked access to one code; h and w may address the border: h in [-border, height + border).
  uint8_t code_at(int64_t n, int64_t c, int64_t h, int64_t w) const;
  void set_code(int64_t n, int64_t c, int64_t h, int64_t w, uint8_t code);
  // All interior codes in NCHW order.
  std::vector<uint8_t> codes() const;

  // --- Layout, for kernels and serialization ----------------------------------------------
  int64_t pixel_bits() const noexcept { return pixel_bits_; }              // Cs = round_up(C, 8)
  int64_t stored_height() const noexcept { return height_ + 2 * border_; }
  int64_t stored_width() const noexcept { return width_ + 2 * border_; }
  int64_t row_stride() const noexcept { return row_stride_; }              // bytes, one plane's row
  int64_t image_stride() const noexcept { return image_stride_; }          // bytes, one image
  const uint8_t* data() const noexcept { return storage_.data(); }
  uint8_t* data() noexcept { return storage_.data(); }
  // Byte offset of (n, stored row r, plane j); pixel x of that row starts at bit x * pixel_bits().
  int64_t row_offset(int64_t n, int64_t stored_row, int plane) const noexcept {
    return n * image_stride_ + (stored_row * quant_.bits + plane) * row_stride_;
  }

  // Sets every border pixel to the zero-point code (the interior is left alone).
  void fill_border();

 private:
  void check_index(int64_t n, int64_t c, int64_t h, int64_t w, const char* what) const;

  int64_t batch_ = 0, channels_ = 0, height_ = 0, width_ = 0;
  int border_ = 0;
  ActivationQuant quant_{};
  int64_t pixel_bits_ = 0, row_stride_ = 0, image_stride_ = 0;
  AlignedVector<uint8_t> storage_;
};

// Quantizes a float NCHW tensor and packs it (parallel over rows). Throws ShapeError unless x has
// rank 4, ArgumentError on bad quantization parameters or border.
PackedActivations quantize_pack(const Tensor& x, const ActivationQuant& quant, int border = 0);
// Same, into `out`, reusing its storage when the geometry already matches.
void quantize_pack(const Tensor& x, const ActivationQuant& quant, int border, PackedActivations& out);

// The real values (code - z) * s of the interior, NCHW.
Tensor dequantize(const PackedActivations& x);

}  // namespace bitmix::kernels
