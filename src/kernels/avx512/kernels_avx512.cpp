// Provisional avx512 path: the portable kernels compiled with avx512 flags (replaced by intrinsics next).
#include "scalar/scalar_kernels.hpp"

namespace bitmix::kernels::detail {

const KernelTable kAvx512Table = {
    Isa::avx512,
    scalar::dense_tile,
    scalar::epilogue_tile,
    scalar::quantize,
    scalar::pack_pixels,
};

}  // namespace bitmix::kernels::detail
