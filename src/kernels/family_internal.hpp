#pragma once
// The driver's side of the kernel families (family.cpp, int8/int8_driver.cpp): the cost figures
// that choose a family and the int8 family's operand preparation.

#include <cstdint>

#include "bitmix/kernels/activations.hpp"
#include "bitmix/kernels/conv.hpp"
#include "bitmix/kernels/family.hpp"
#include "bitmix/kernels/weights.hpp"
#include "int8/int8_table.hpp"
#include "kernel_table.hpp"

namespace bitmix::kernels::detail {

// Relative costs of one output pixel of one 16-lane block on each dense path, in the ISA's units
// (KernelTable / Int8Table figures of the same ISA).
struct DenseCosts {
  int64_t bit_serial = 0;  // popcount family, bit planes
  int64_t integer16 = 0;   // popcount family, unpacked int16 pairs
  int64_t int8 = 0;        // int8 family
};
DenseCosts dense_costs(const WeightSpec& spec, int act_bits, const KernelTable& table, const Int8Table& int8);

// The family `requested` resolves to with these tables (depthwise: popcount; a lut the layer
// does not take: the automatic choice).
KernelFamily resolve_family(KernelFamily requested, const WeightSpec& spec, int act_bits, const KernelTable& table,
                            const Int8Table& int8);
// The table-lookup kernels' cost in the same units on the active path, or -1 where `automatic`
// does not consider them (unsupported layer, or a path other than AVX2).
double lut_cost(const WeightSpec& spec, int act_bits);
// What conv2d runs for Conv2dParams::family `requested` on the active tables: resolve_family,
// except that a forced dense path (set_dense_path) makes `automatic` popcount.
KernelFamily conv_family(KernelFamily requested, const WeightSpec& spec, int act_bits);
// Whether conv2d on packed weights hands this layer to the table-lookup kernels.
bool runs_lut(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params);

// The int8 tile's arithmetic settings for a layer (int16_quads, split_nibbles, shift); the
// pointers and geometry are left for the driver.
Int8Tile int8_tile_settings(const WeightSpec& spec, int act_bits);

// All codes of the stored input (border included) as uint8 [n][stored row][stored col][round_up(C, 4)],
// channels past C zero; `codes` holds that many bytes.
void unpack_codes8(const PackedActivations& input, const Int8Table& table, uint8_t* codes);

}  // namespace bitmix::kernels::detail
