#include "bitmix/kernels/activations.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "kernel_table.hpp"
#include "layout.hpp"

namespace bitmix::kernels {

void validate(const ActivationQuant& quant, std::string_view what) {
  if (quant.bits < 1 || quant.bits > 8)
    throw ArgumentError(fmt::format("{}: activation bits {} outside 1..8", what, quant.bits));
  if (!std::isfinite(quant.scale) || !(quant.scale > 0.0f))
    throw ArgumentError(fmt::format("{}: activation scale {} must be finite and > 0", what, quant.scale));
  if (quant.zero_point < 0 || quant.zero_point > quant.max_code())
    throw ArgumentError(fmt::format("{}: zero point {} outside [0, {}] for {}-bit activations", what,
                                    quant.zero_point, quant.max_code(), quant.bits));
}

uint8_t quantize_code(float x, const ActivationQuant& quant) noexcept {
  // Written so that every SIMD path can mirror it operation by operation: divide, round half
  // to even, add z in float, then max(., 0) (NaN -> 0) and min(., 2^K - 1).
  const float ratio = quant.reciprocal ? x * (1.0f / quant.scale) : x / quant.scale;
  const float r = std::nearbyint(ratio) + static_cast<float>(quant.zero_point);
  if (!(r > 0.0f)) return 0;
  const float top = static_cast<float>(quant.max_code());
  return static_cast<uint8_t>(r < top ? r : top);
}

PackedActivations::PackedActivations(int64_t batch, int64_t channels, int64_t height, int64_t width,
                                     const ActivationQuant& quant, int border) {
  validate(quant, "PackedActivations");
  if (batch < 1 || channels < 1 || height < 1 || width < 1)
    throw ShapeError(fmt::format("PackedActivations: extents [{}, {}, {}, {}] must all be >= 1", batch, channels,
                                 height, width));
  if (border < 0 || border > 64)
    throw ArgumentError(fmt::format("PackedActivations: border {} outside 0..64", border));
  constexpr int64_t kLimit = int64_t{1} << 40;  // 1 TiB of planes: anything larger is a mistake
  if (channels > kLimit || height > kLimit || width > kLimit || batch > kLimit)
    throw ShapeError(fmt::format("PackedActivations: extents [{}, {}, {}, {}] too large", batch, channels, height,
                                 width));
  batch_ = batch;
  channels_ = channels;
  height_ = height;
  width_ = width;
  border_ = border;
  quant_ = quant;
  pixel_bits_ = detail::round_up(channels, 8);
  const int64_t sw = stored_width(), sh = stored_height();
  if (static_cast<double>(sw) * static_cast<double>(pixel_bits_) * static_cast<double>(sh) * quant.bits *
          static_cast<double>(batch) / 8.0 > static_cast<double>(kLimit))
    throw ShapeError(fmt::format("PackedActivations: [{}, {}, {}, {}] at {} bits is too large", batch, channels,
                                 height, width, quant.bits));
  row_stride_ = detail::round_up(sw * pixel_bits_ / 8, 8);
  image_stride_ = sh * quant.bits * row_stride_;
  storage_.assign(static_cast<std::size_t>(batch * image_stride_ + detail::kInputSlackBytes), 0);
  // Every pixel starts at the zero point: the border keeps it, the interior is overwritten.
  for (int64_t n = 0; n < batch_; ++n)
    for (int64_t r = 0; r < sh; ++r)
      for (int j = 0; j < quant.bits; ++j) detail::fill_pixels_with_code(*this, n, r, j, 0, sw, quant.zero_point);
}

PackedActivations PackedActivations::from_codes(std::span<const uint8_t> codes, int64_t batch, int64_t channels,
                                                int64_t height, int64_t width, const ActivationQuant& quant,
                                                int border) {
  PackedActivations out(batch, channels, height, width, quant, border);
  const int64_t count = batch * channels * height * width;
  if (static_cast<int64_t>(codes.size()) != count)
    throw ShapeError(fmt::format("PackedActivations::from_codes: {} codes given, [{}, {}, {}, {}] needs {}",
                                 codes.size(), batch, channels, height, width, count));
  for (int64_t i = 0; i < count; ++i)
    if (codes[static_cast<std::size_t>(i)] > quant.max_code())
      throw ArgumentError(fmt::format("PackedActivations::from_codes: code {} at index {} exceeds {} for {} bits",
                                      codes[static_cast<std::size_t>(i)], i, quant.max_code(), quant.bits));
  const detail::KernelTable& table = detail::kernel_table();
  std::vector<uint8_t> pixels(static_cast<std::size_t>(width * channels));
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t h = 0; h < height; ++h) {
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t w = 0; w < width; ++w)
          pixels[static_cast<std::size_t>(w * channels + c)] =
              codes[static_cast<std::size_t>(((n * channels + c) * height + h) * width + w)];
      table.pack_pixels(pixels.data(), width, channels, out.pixel_bits_, quant.bits, border,
                        out.storage_.data() + out.row_offset(n, h + border, 0), out.row_stride_);
    }
  return out;
}

void PackedActivations::check_index(int64_t n, int64_t c, int64_t h, int64_t w, const char* what) const {
  if (n < 0 || n >= batch_ || c < 0 || c >= channels_ || h < -border_ || h >= height_ + border_ || w < -border_ ||
      w >= width_ + border_)
    throw ShapeError(fmt::format("PackedActivations::{}: index ({}, {}, {}, {}) outside [{}, {}, {}, {}] with border {}",
                                 what, n, c, h, w, batch_, channels_, height_, width_, border_));
}

uint8_t PackedActivations::code_at(int64_t n, int64_t c, int64_t h, int64_t w) const {
  check_index(n, c, h, w, "code_at");
  const int64_t bit = (w + border_) * pixel_bits_ + c;
  uint8_t code = 0;
  for (int j = 0; j < quant_.bits; ++j) {
    const uint8_t byte = storage_[static_cast<std::size_t>(row_offset(n, h + border_, j) + bit / 8)];
    code = static_cast<uint8_t>(code | (((byte >> (bit % 8)) & 1u) << j));
  }
  return code;
}

void PackedActivations::set_code(int64_t n, int64_t c, int64_t h, int64_t w, uint8_t code) {
  check_index(n, c, h, w, "set_code");
  if (code > quant_.max_code())
    throw ArgumentError(fmt::format("PackedActivations::set_code: code {} exceeds {} for {} bits", code,
                                    quant_.max_code(), quant_.bits));
  const int64_t bit = (w + border_) * pixel_bits_ + c;
  for (int j = 0; j < quant_.bits; ++j) {
    uint8_t& byte = storage_[static_cast<std::size_t>(row_offset(n, h + border_, j) + bit / 8)];
    const auto mask = static_cast<uint8_t>(1u << (bit % 8));
    byte = static_cast<uint8_t>(((code >> j) & 1) ? (byte | mask) : (byte & ~mask));
  }
}

std::vector<uint8_t> PackedActivations::codes() const {
  std::vector<uint8_t> out(static_cast<std::size_t>(batch_ * channels_ * height_ * width_));
  for (int64_t n = 0; n < batch_; ++n)
    for (int64_t h = 0; h < height_; ++h)
      for (int j = 0; j < quant_.bits; ++j) {
        const uint8_t* row = storage_.data() + row_offset(n, h + border_, j);
        for (int64_t w = 0; w < width_; ++w)
          for (int64_t c = 0; c < channels_; ++c) {
            const int64_t bit = (w + border_) * pixel_bits_ + c;
            out[static_cast<std::size_t>(((n * channels_ + c) * height_ + h) * width_ + w)] |=
                static_cast<uint8_t>(((row[bit / 8] >> (bit % 8)) & 1u) << j);
          }
      }
  return out;
}

void PackedActivations::fill_border() {
  if (border_ == 0) return;
  const int64_t sw = stored_width(), sh = stored_height();
  for (int64_t n = 0; n < batch_; ++n)
    for (int64_t r = 0; r < sh; ++r)
      for (int j = 0; j < quant_.bits; ++j) {
        if (r < border_ || r >= border_ + height_) {
          detail::fill_pixels_with_code(*this, n, r, j, 0, sw, quant_.zero_point);
        } else {
          detail::fill_pixels_with_code(*this, n, r, j, 0, border_, quant_.zero_point);
          detail::fill_pixels_with_code(*this, n, r, j, border_ + width_, sw, quant_.zero_point);
        }
      }
}

void quantize_pack(const Tensor& x, const ActivationQuant& quant, int border, PackedActivations& out) {
  validate(quant, "quantize_pack");
  if (x.rank() != 4)
    throw ShapeError(fmt::format("quantize_pack: expected an NCHW tensor of rank 4, got shape {}",
                                 shape_to_string(x.shape())));
  const Shape& s = x.shape();
  if (out.empty() || out.shape() != s || !(out.quant() == quant) || out.border() != border)
    out = PackedActivations(s[0], s[1], s[2], s[3], quant, border);
  else
    out.fill_border();  // reused storage: the border must hold the zero point whatever was there
  const int64_t batch = s[0], channels = s[1], height = s[2], width = s[3];
  const detail::KernelTable& table = detail::kernel_table();
  const float* src = x.data();
  uint8_t* dst = out.data();
  const int64_t rows = batch * height;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, channels * width));
  const int64_t pixel_bytes = out.pixel_bits() / 8;
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    // The kernels' scratch (the generic row packer transposes through it), per thread so that
    // rows after the first allocate nothing.
    thread_local std::vector<uint8_t> scratch;
    scratch.resize(static_cast<std::size_t>(2 * channels * width));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / height, h = row % height;
      table.quantize_pack_row(src + (n * channels * height + h) * width, height * width, channels, width, quant,
                              dst + out.row_offset(n, h + border, 0) + border * pixel_bytes, out.row_stride(),
                              pixel_bytes, scratch.data());
    }
  });
}

PackedActivations quantize_pack(const Tensor& x, const ActivationQuant& quant, int border) {
  PackedActivations out;
  quantize_pack(x, quant, border, out);
  return out;
}

Tensor dequantize(const PackedActivations& x) {
  Tensor out(x.shape());
  const std::vector<uint8_t> codes = x.codes();
  const float scale = x.quant().scale;
  const int32_t z = x.quant().zero_point;
  for (std::size_t i = 0; i < codes.size(); ++i)
    out[static_cast<int64_t>(i)] = static_cast<float>(static_cast<int32_t>(codes[i]) - z) * scale;
  return out;
}

}  // namespace bitmix::kernels
