#pragma once
// Helpers for the kernel tests: random operands and the list of paths.

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/kernels.hpp"

namespace bitmix::kernels::testing {

inline const std::vector<Isa>& all_paths() {
  static const std::vector<Isa> paths{Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512vnni, Isa::neon};
  return paths;
}

inline std::string path_name(const ::testing::TestParamInfo<Isa>& info) { return std::string(isa_name(info.param)); }

// Skips the current test unless `isa` can run here; otherwise caps to it for the scope.
#define BITMIX_REQUIRE_PATH(isa)                                                         \
  if (!::bitmix::isa_available(isa)) GTEST_SKIP() << ::bitmix::isa_name(isa) << " not available"; \
  ::bitmix::ScopedIsaCap bitmix_path_cap_(isa);                                          \
  ASSERT_EQ(::bitmix::active_isa(), isa)

inline std::vector<int32_t> random_weight_codes(Rng& rng, int64_t count, int bits, WeightEncoding encoding) {
  std::vector<int32_t> codes(static_cast<std::size_t>(count));
  for (auto& c : codes) {
    if (encoding == WeightEncoding::twos_complement) {
      c = static_cast<int32_t>(rng.below(uint64_t{1} << bits)) - (1 << (bits - 1));
    } else {
      c = 2 * static_cast<int32_t>(rng.below(uint64_t{1} << bits)) - ((1 << bits) - 1);
    }
  }
  return codes;
}

inline std::vector<uint8_t> random_codes(Rng& rng, int64_t count, int bits) {
  std::vector<uint8_t> codes(static_cast<std::size_t>(count));
  for (auto& c : codes) c = static_cast<uint8_t>(rng.below(uint64_t{1} << bits));
  return codes;
}

inline PackedActivations random_activations(Rng& rng, int64_t n, int64_t c, int64_t h, int64_t w, int bits,
                                            int border) {
  ActivationQuant q;
  q.bits = bits;
  q.scale = 0.25f;
  q.zero_point = static_cast<int32_t>(rng.below(uint64_t{1} << bits));
  return PackedActivations::from_codes(random_codes(rng, n * c * h * w, bits), n, c, h, w, q, border);
}

inline PackedWeights random_weights(Rng& rng, const WeightSpec& spec) {
  return PackedWeights::pack(random_weight_codes(rng, spec.code_count(), spec.bits, spec.encoding), spec);
}

// Per-channel scale/bias spanning both signs (a negative scale flips the threshold direction).
inline std::pair<std::vector<float>, std::vector<float>> random_scale_bias(Rng& rng, int64_t channels, float magnitude) {
  std::vector<float> scale(static_cast<std::size_t>(channels)), bias(static_cast<std::size_t>(channels));
  for (int64_t i = 0; i < channels; ++i) {
    scale[static_cast<std::size_t>(i)] = rng.uniform(-magnitude, magnitude);
    bias[static_cast<std::size_t>(i)] = rng.uniform(-3.0f, 3.0f);
  }
  if (channels > 2) scale[1] = 0.0f;  // a dead channel: constant output
  return {scale, bias};
}

// Bitwise float equality (so -0 vs +0 and NaN payloads would count as different).
inline ::testing::AssertionResult same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shapes " << shape_to_string(a.shape()) << " vs " << shape_to_string(b.shape());
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(&a.data()[i], &b.data()[i], sizeof(float)) != 0)
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << b[i];
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult same_codes(const PackedActivations& a, const PackedActivations& b) {
  if (a.shape() != b.shape() || a.border() != b.border() || !(a.quant() == b.quant()))
    return ::testing::AssertionFailure() << "geometry differs: " << shape_to_string(a.shape()) << " vs "
                                         << shape_to_string(b.shape());
  const int border = a.border();
  for (int64_t n = 0; n < a.batch(); ++n)
    for (int64_t c = 0; c < a.channels(); ++c)
      for (int64_t h = -border; h < a.height() + border; ++h)
        for (int64_t w = -border; w < a.width() + border; ++w)
          if (a.code_at(n, c, h, w) != b.code_at(n, c, h, w))
            return ::testing::AssertionFailure() << "code (" << n << ", " << c << ", " << h << ", " << w
                                                 << "): " << int(a.code_at(n, c, h, w)) << " vs "
                                                 << int(b.code_at(n, c, h, w));
  // Padding bits and every stored byte must agree too (the next layer reads whole words).
  for (int64_t n = 0; n < a.batch(); ++n)
    for (int64_t r = 0; r < a.stored_height(); ++r)
      for (int j = 0; j < a.bits(); ++j) {
        const int64_t bytes = a.stored_width() * a.pixel_bits() / 8;
        if (std::memcmp(a.data() + a.row_offset(n, r, j), b.data() + b.row_offset(n, r, j),
                        static_cast<std::size_t>(bytes)) != 0)
          return ::testing::AssertionFailure() << "stored bytes differ in image " << n << " row " << r << " plane " << j;
      }
  return ::testing::AssertionSuccess();
}

}  // namespace bitmix::kernels::testing
