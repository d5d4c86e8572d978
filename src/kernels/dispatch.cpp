// Chooses the kernel table: the best compiled-in path the CPU runs, capped by BITMIX_MAX_ISA.
#include <fmt/format.h>

#include "bitmix/core/error.hpp"
#include "kernel_table.hpp"

namespace bitmix::kernels::detail {

const KernelTable& kernel_table_for(Isa isa) {
  switch (isa) {
#if defined(BITMIX_HAVE_AVX2)
    case Isa::avx2: return kAvx2Table;
#endif
#if defined(BITMIX_HAVE_AVX512)
    case Isa::avx512: return kAvx512Table;
#endif
#if defined(BITMIX_HAVE_NEON)
    case Isa::neon: return kNeonTable;
#endif
    case Isa::scalar: return kScalarTable;
    default: break;
  }
  throw Error(fmt::format("kernels: no {} path compiled into this build", isa_name(isa)));
}

// active_isa() only returns compiled-in paths the CPU supports, so this never throws there.
const KernelTable& kernel_table() { return kernel_table_for(active_isa()); }

}  // namespace bitmix::kernels::detail
