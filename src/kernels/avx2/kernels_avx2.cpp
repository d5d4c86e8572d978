// Provisional avx2 path: the portable kernels compiled with avx2 flags (replaced by intrinsics next).
#include "scalar/scalar_kernels.hpp"

namespace bitmix::kernels::detail {

const KernelTable kAvx2Table = {
    Isa::avx2,
    scalar::dense_tile,
    scalar::epilogue_tile,
    scalar::quantize,
    scalar::pack_pixels,
    scalar::pixel_code_sums<scalar::popcount64>,
    scalar::window_sums,
};

}  // namespace bitmix::kernels::detail
