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

}  // namespace bitmix::kernels::detail
