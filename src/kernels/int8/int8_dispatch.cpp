// Chooses the int8 family's table: the best compiled-in path the CPU runs, capped by
// BITMIX_MAX_ISA, through the one ISA-dispatch mechanism (src/core/isa_dispatch.hpp). AVX-512
// without VNNI has no table of its own: under the avx512 cap the AVX2 one runs.
#include "core/isa_dispatch.hpp"
#include "int8/int8_table.hpp"

namespace bitmix::kernels::detail {
namespace {

constinit bitmix::detail::IsaDispatch<Int8Table> g_int8_tables{"kernels.int8", {
#if defined(BITMIX_HAVE_AVX512VNNI)
    {Isa::avx512vnni, &kInt8Avx512VnniTable},
#endif
#if defined(BITMIX_HAVE_AVX2)
    {Isa::avx2, &kInt8Avx2Table},
#endif
#if defined(BITMIX_HAVE_NEON)
    {Isa::neon, &kInt8NeonTable},
#endif
    {Isa::scalar, &kInt8ScalarTable},
}};
[[maybe_unused]] const bool g_int8_tables_listed = g_int8_tables.list();

}  // namespace

const Int8Table& int8_table() { return g_int8_tables.active(); }
const bitmix::detail::IsaDispatchBase& int8_dispatch() { return g_int8_tables; }

}  // namespace bitmix::kernels::detail
