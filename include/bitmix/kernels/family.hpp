#pragma once
// Kernel families: different arithmetic for the same exact integer convolution.
//
//   popcount  bit-serial AND + popcount over bit planes (with its own switch to unpacked int16
//             multiplies for wide bitwidths); cheapest at 1-2 bits
//   int8      codes unpacked to bytes and multiplied by int8 dot products (VPDPBUSD on AVX-512
//             VNNI, VPMADDUBSW on AVX2, SMLAL on NEON); cheapest from about 3 bits up
//
// Every family gives bit-identical results on every ISA path; only speed differs. A layer runs
// the family in Conv2dParams::family; `automatic` asks conv2d to take the cheaper one by the
// active ISA's cost figures (choose_kernel_family). Depthwise convolutions have one kernel,
// which every family uses.
//
// Adding a family: one enumerator here, one row in kKernelFamilies, its cost in
// choose_kernel_family and its tile in the driver (src/kernels/conv.cpp).

#include <cstdint>
#include <span>
#include <string_view>

#include "bitmix/kernels/weights.hpp"

namespace bitmix::kernels {

enum class KernelFamily : uint8_t { automatic, popcount, int8 };

struct KernelFamilyInfo {
  KernelFamily family;
  std::string_view name;
};
// Every concrete family (not `automatic`), in enum order.
inline constexpr KernelFamilyInfo kKernelFamilies[] = {
    {KernelFamily::popcount, "popcount"},
    {KernelFamily::int8, "int8"},
};

// "popcount", "int8", ... and "auto" for automatic.
std::string_view kernel_family_name(KernelFamily family);
// Parses a name kernel_family_name() gives; throws ArgumentError naming `what`, the text and
// the accepted names otherwise.
KernelFamily parse_kernel_family(std::string_view text, std::string_view what = "kernel family");

// The family `automatic` runs for a layer with these weights and activation bits on the active
// ISA path: the one with the lowest cost by that path's per-step figures (popcount for depthwise
// layers). Never returns `automatic`.
KernelFamily choose_kernel_family(const WeightSpec& weights, int activation_bits);

}  // namespace bitmix::kernels
