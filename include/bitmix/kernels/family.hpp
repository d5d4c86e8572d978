#pragma once
// Kernel families: different arithmetic for the same exact integer convolution.
//
//   popcount  bit-serial AND + popcount over bit planes (with its own switch to unpacked int16
//             multiplies for wide bitwidths); cheapest at 1-2 bits
//   int8      codes unpacked to bytes and multiplied by int8 dot products (VPDPBUSD on AVX-512
//             VNNI, VPMADDUBSW on AVX2, SMLAL on NEON); cheapest from about 3 bits up
//   lut       table lookups of 4-channel weight sums indexed by activation bit planes
//             (bitmix/kernels/lut.hpp); only weights and activations of 1 to 4 bits; cheapest
//             on AVX2, where there is no fast 8-bit dot product. Elsewhere `automatic` never
//             takes it (it loses to popcount AVX-512 on the CPUs measured; NEON is untimed)
//
// Every family gives bit-identical results on every ISA path; only speed differs. A layer runs
// the family in Conv2dParams::family; `automatic` asks conv2d to take the cheaper one by the
// active ISA's cost figures (choose_kernel_family). Depthwise convolutions have one kernel,
// which every family uses. A layer the requested family cannot run (lut on weights or
// activations wider than 4 bits, see kernels::lut_supported) runs the `automatic` choice, so
// forcing a family is valid for every model.
//
// Adding a family: one enumerator here, one row in kKernelFamilies, its cost in
// choose_kernel_family and its tile in the driver (src/kernels/conv.cpp).

#include <cstdint>
#include <span>
#include <string_view>

#include "bitmix/kernels/weights.hpp"

namespace bitmix::kernels {

enum class KernelFamily : uint8_t { automatic, popcount, int8, lut };

struct KernelFamilyInfo {
  KernelFamily family;
  std::string_view name;
};
// Every concrete family (not `automatic`), in enum order.
inline constexpr KernelFamilyInfo kKernelFamilies[] = {
    {KernelFamily::popcount, "popcount"},
    {KernelFamily::int8, "int8"},
    {KernelFamily::lut, "lut"},
};

// "popcount", "int8", "lut" and "auto" for automatic.
std::string_view kernel_family_name(KernelFamily family);
// Parses a name kernel_family_name() gives; throws ArgumentError naming `what`, the text and
// the accepted names otherwise.
KernelFamily parse_kernel_family(std::string_view text, std::string_view what = "kernel family");

// The family `automatic` runs for a layer with these weights and activation bits on the active
// ISA path: the one with the lowest cost by that path's per-step figures (popcount for depthwise
// layers; lut only where lut_supported() and the path is AVX2). Never returns `automatic`.
KernelFamily choose_kernel_family(const WeightSpec& weights, int activation_bits);

}  // namespace bitmix::kernels
