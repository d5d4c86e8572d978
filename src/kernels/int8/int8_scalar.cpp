// The int8 family's portable path: plain C++ multiplies, for any CPU.
#include "int8/int8_scalar_tile.hpp"

namespace bitmix::kernels::detail {

constinit const Int8Table kInt8ScalarTable = {
    int8_scalar::int8_tile,
    int8_scalar::expand_planes,
    128,  // 16 x 4 multiply-adds (KernelTable's scalar units: 224 per bit-plane pair word)
    128,
};

}  // namespace bitmix::kernels::detail
