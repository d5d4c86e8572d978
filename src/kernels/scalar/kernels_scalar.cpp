// The portable scalar path: plain C++ with a bit-twiddling popcount, for any CPU.
#include "scalar/scalar_kernels.hpp"

namespace bitmix::kernels::detail {

constinit const KernelTable kScalarTable = {
    scalar::dense_tile,
    scalar::epilogue_tile,
    scalar::depthwise_tile,
    scalar::integer_tile,
    224,  // 16 x (AND, bit-twiddling popcount, add)
    64,   // 16 x 2 multiply-adds
    scalar::quantize,
    scalar::pack_pixels,
    scalar::quantize_pack_row<scalar::quantize, scalar::pack_pixels>,
    scalar::pixel_code_sums<scalar::popcount64>,
};

}  // namespace bitmix::kernels::detail
