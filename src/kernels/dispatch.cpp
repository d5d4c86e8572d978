// Chooses the kernel table: the best compiled-in path the CPU runs, capped by BITMIX_MAX_ISA,
// through the one ISA-dispatch mechanism (src/core/isa_dispatch.hpp).
#include "core/isa_dispatch.hpp"
#include "kernel_table.hpp"

namespace bitmix::kernels::detail {
namespace {

constinit bitmix::detail::IsaDispatch<KernelTable> g_tables{"kernels", {
#if defined(BITMIX_HAVE_AVX512)
    {Isa::avx512, &kAvx512Table},
#endif
#if defined(BITMIX_HAVE_AVX2)
    {Isa::avx2, &kAvx2Table},
#endif
#if defined(BITMIX_HAVE_NEON)
    {Isa::neon, &kNeonTable},
#endif
    {Isa::scalar, &kScalarTable},
}};
[[maybe_unused]] const bool g_tables_listed = g_tables.list();

}  // namespace

const KernelTable& kernel_table() { return g_tables.active(); }
const bitmix::detail::IsaDispatchBase& kernel_dispatch() { return g_tables; }

}  // namespace bitmix::kernels::detail
