#pragma once
// Shared by the driver (conv.cpp) and the reference (reference.cpp).

#include <cstdint>
#include <vector>

#include "bitmix/kernels/conv.hpp"

namespace bitmix::kernels::detail {

struct ConvGeometry {
  int64_t batch = 0, channels = 0, height = 0, width = 0;
  int64_t out_channels = 0, kernel_h = 0, kernel_w = 0;
  int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int64_t out_height = 0, out_width = 0;
  KernelFamily family = KernelFamily::automatic;  // as requested (Conv2dParams::family)
};

// Validates everything conv2d needs and returns the geometry; throws bitmix::Error subclasses.
ConvGeometry check_conv(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
                        const Epilogue& epilogue, bool packed_output, const char* what);

struct KernelTable;

// The integral image of the per-pixel code sums of every stored image, (SH + 1) x (SW + 1) per
// image, wrapping modulo 2^32 (window sums taken from it are exact: conv2d checks the range).
void code_sum_prefix(const PackedActivations& input, const KernelTable& table, uint32_t* prefix);
// All codes of the stored input (border included) as [n][stored row][stored col][channel].
std::vector<uint8_t> unpack_codes(const PackedActivations& input);
// The codes as uint16 [n][stored row][stored col][round_up(C, 2)] (padding channels zero).
void unpack_codes16(const PackedActivations& input, uint16_t* codes);

// Which dense path conv2d takes: the cheaper one by the ISA's cost model (default), or one
// forced (tests use this to check both paths on every bitwidth pair). Process-wide.
enum class DensePath { automatic, bit_serial, integer };
void set_dense_path(DensePath path);
DensePath dense_path();

// A dense kernel family outside this driver (the table-lookup kernels, lut/), run on the
// driver's tiles, epilogue and threads. Per tile, begin_tile gets the window origin of every
// tile pixel (n * stored_height + first stored row, first stored column; kTilePixels entries,
// those past `pixels` repeating a valid one) and may fill `scratch` (scratch_bytes, per thread); then
// block writes acc[q * 16 + l] for each 16-lane block: the exact sums of w * code, with no
// zero-point or odd-level term (the driver adds -z * sum(w)).
struct ExternalDense {
  const void* context = nullptr;
  int64_t scratch_bytes = 0;
  void (*begin_tile)(const void* context, const int64_t* window_rows, const int64_t* window_cols, int pixels,
                     uint8_t* scratch) = nullptr;
  void (*block)(const void* context, const uint8_t* scratch, int64_t block, int32_t* acc) = nullptr;
};
// conv2d (conv.hpp) on such a family, after the same checks.
void conv2d_external(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
                     const Epilogue& epilogue, Tensor& out, const ExternalDense& family);
void conv2d_external(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
                     const Epilogue& epilogue, PackedActivations& out, const ExternalDense& family);

}  // namespace bitmix::kernels::detail
