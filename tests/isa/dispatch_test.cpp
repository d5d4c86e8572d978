// Every module with per-ISA code (core's sgemm, kernels, quant's elementwise kernels) goes
// through the one dispatch mechanism of src/core/isa_dispatch.hpp: one cap change switches all
// of them, each keeps its table while the cap stays, readers racing a cap change get valid
// tables, and the hot-path queries never allocate.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "bitmix/core/cpu.hpp"
#include "core/isa_dispatch.hpp"
#include "core/sgemm_kernels.hpp"
#include "kernels/int8/int8_table.hpp"
#include "kernels/kernel_table.hpp"
#include "kernels/lut/lut_table.hpp"
#if defined(BITMIX_TEST_HAVE_QUANT)
#include "quant/engine.hpp"
#endif

// Counting replacements of the global allocation functions: only allocations on a thread that
// asked for counting are counted.
namespace {
thread_local bool t_counting = false;
std::atomic<int64_t> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  if (t_counting) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace bitmix {
namespace {

namespace kd = kernels::detail;

// The table each module should use while `isa` is active: its own table for that level, else
// (a level the module has no code for) its portable one.
const void* expected_kernels(Isa isa) {
  switch (isa) {
#if defined(BITMIX_HAVE_AVX512)
    case Isa::avx512vnni:  // no VNNI code of its own: the AVX-512 table
    case Isa::avx512: return &kd::kAvx512Table;
#endif
#if defined(BITMIX_HAVE_AVX2)
    case Isa::avx2: return &kd::kAvx2Table;
#endif
#if defined(BITMIX_HAVE_NEON)
    case Isa::neon: return &kd::kNeonTable;
#endif
    default: return &kd::kScalarTable;
  }
}
// The int8 family has a VNNI table and none for plain AVX-512, where the AVX2 one runs.
const void* expected_int8(Isa isa) {
  switch (isa) {
#if defined(BITMIX_HAVE_AVX512VNNI)
    case Isa::avx512vnni: return &kd::kInt8Avx512VnniTable;
#endif
#if defined(BITMIX_HAVE_AVX2)
    case Isa::avx512:
    case Isa::avx2: return &kd::kInt8Avx2Table;
#endif
#if defined(BITMIX_HAVE_NEON)
    case Isa::neon: return &kd::kInt8NeonTable;
#endif
    default: return &kd::kInt8ScalarTable;
  }
}
// The table-lookup kernels have no AVX-512 table: the AVX-512 levels run their AVX2 one.
const void* expected_lut(Isa isa) {
  switch (isa) {
#if defined(BITMIX_HAVE_AVX2)
    case Isa::avx512vnni:
    case Isa::avx512:
    case Isa::avx2: return &kd::kLutAvx2Table;
#endif
#if defined(BITMIX_HAVE_NEON)
    case Isa::neon: return &kd::kLutNeonTable;
#endif
    default: return &kd::kLutScalarTable;
  }
}
const void* expected_sgemm(Isa isa) {
  switch (isa) {
#if defined(BITMIX_HAVE_AVX512)
    case Isa::avx512vnni:
    case Isa::avx512: return &detail::kSgemmKernelsAvx512;
#endif
#if defined(BITMIX_HAVE_AVX2)
    case Isa::avx2: return &detail::kSgemmKernelsAvx2;
#endif
    default: return &detail::kSgemmKernelsScalar;  // no NEON sgemm kernels
  }
}
#if defined(BITMIX_TEST_HAVE_QUANT)
const void* expected_quant(Isa isa) {
  namespace qd = quant::detail;
  switch (isa) {
#if defined(BITMIX_HAVE_AVX512)
    case Isa::avx512vnni:
    case Isa::avx512: return &qd::kElementKernelsAvx512;
#endif
#if defined(BITMIX_HAVE_AVX2)
    case Isa::avx2: return &qd::kElementKernelsAvx2;
#endif
    default: return &qd::kElementKernelsScalar;  // no NEON elementwise kernels
  }
}
#endif

// One module as the tests see it: its table now, its dispatcher, what it should use.
struct Module {
  const char* name;
  const void* (*table)();
  const detail::IsaDispatchBase& (*dispatch)();
  const void* (*expected)(Isa);
};

std::vector<Module> modules() {
  std::vector<Module> m = {
      {"kernels", [] { return static_cast<const void*>(&kd::kernel_table()); }, kd::kernel_dispatch, expected_kernels},
      {"kernels.int8", [] { return static_cast<const void*>(&kd::int8_table()); }, kd::int8_dispatch, expected_int8},
      {"kernels.lut", [] { return static_cast<const void*>(&kd::lut_table()); }, kd::lut_dispatch, expected_lut},
      {"sgemm", [] { return static_cast<const void*>(&detail::sgemm_kernels()); }, detail::sgemm_dispatch,
       expected_sgemm},
  };
#if defined(BITMIX_TEST_HAVE_QUANT)
  m.push_back({"quant", [] { return static_cast<const void*>(&quant::detail::element_kernels()); },
               quant::detail::element_kernels_dispatch, expected_quant});
#endif
  return m;
}

Isa reported_isa(const char* name) {
  for (const IsaTableChoice& t : active_isa_tables())
    if (t.table == name) return t.isa;
  ADD_FAILURE() << name << " is not in active_isa_tables()";
  return Isa::scalar;
}

// Checks every module against the ISA active now.
void expect_every_module_follows(const std::string& where) {
  const Isa isa = active_isa();
  for (const Module& m : modules()) {
    const void* expected = m.expected(isa);
    EXPECT_EQ(m.table(), expected) << m.name << " " << where;
    EXPECT_EQ(m.dispatch().active_variant().table, expected) << m.name << " " << where;
    const Isa module_isa = m.dispatch().active_variant().isa;
    EXPECT_EQ(reported_isa(m.name), module_isa) << m.name << " " << where;
    // a module without code for the active level runs the best of its tables the level allows
    EXPECT_TRUE(detail::isa_level_features(isa).contains(detail::isa_level_features(module_isa))) << m.name << " " << where;
  }
}

TEST(IsaTables, EveryModuleSwitchesWithOneCapChange) {
  expect_every_module_follows("without a test cap");
  std::vector<const void*> before;
  for (const Module& m : modules()) before.push_back(m.table());
  for (Isa isa : available_isas()) {
    ScopedIsaCap cap(isa);
    ASSERT_EQ(active_isa(), isa);
    expect_every_module_follows(std::string("capped at ") + std::string(isa_name(isa)));
  }
  // The cap is restored: so is every table.
  const std::vector<Module> all = modules();
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].table(), before[i]) << all[i].name;
}

TEST(IsaTables, EveryModuleChoosesOncePerCap) {
  for (const Module& m : modules()) {
    const void* first = m.table();
    const uint64_t choices = m.dispatch().choices();
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(m.table(), first) << m.name;
    EXPECT_EQ(m.dispatch().choices(), choices) << m.name << " chose again without a cap change";
    {
      ScopedIsaCap cap(Isa::scalar);
      for (int i = 0; i < 1000; ++i) ASSERT_EQ(m.table(), m.expected(Isa::scalar)) << m.name;
      EXPECT_EQ(m.dispatch().choices(), choices + 1) << m.name;
    }
    EXPECT_EQ(m.table(), first) << m.name;
  }
}

TEST(IsaTables, ReadersRacingCapChangesGetValidTables) {
  const std::span<const Isa> isas = available_isas();
  const std::vector<Module> all = modules();
  auto valid = [&](const Module& m, const void* table) {
    for (Isa isa : isas)
      if (table == m.expected(isa)) return true;
    return false;
  };
  std::atomic<bool> stop{false};
  std::atomic<int> invalid{0};
  std::atomic<int64_t> reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r)
    readers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        for (const Module& m : all)
          if (!valid(m, m.table())) invalid.fetch_add(1);
        reads.fetch_add(1, std::memory_order_relaxed);
      }
    });
  // Every cap change waits for a few reads under it, so the readers really overlap the changes.
  auto let_readers_run = [&] {
    const int64_t target = reads.load() + 8;
    while (reads.load() < target) {
    }
  };
  let_readers_run();
  for (int i = 0; i < 50; ++i) {
    ScopedIsaCap cap(isas[static_cast<std::size_t>(i) % isas.size()]);
    let_readers_run();
  }
  stop = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(invalid.load(), 0);
  expect_every_module_follows("after the race");
}

TEST(IsaTables, HotPathQueriesDoNotAllocate) {
  const std::span<const Isa> isas = available_isas();
  const std::vector<Module> all = modules();
  for (const Module& m : all) m.table();  // first use: detection, BITMIX_MAX_ISA, the lists
  int64_t sink = 0;
  g_allocations = 0;
  t_counting = true;
  for (int i = 0; i < 200; ++i) {
    sink += static_cast<int>(best_isa()) + static_cast<int>(active_isa()) + static_cast<int64_t>(available_isas().size());
    sink += isa_available(Isa::avx2) ? 1 : 0;
    sink += isa_cap().has_value() ? 1 : 0;
    for (const Module& m : all) sink += m.table() != nullptr ? 1 : 0;
    ScopedIsaCap cap(isas[static_cast<std::size_t>(i) % isas.size()]);  // and choosing again
    for (const Module& m : all) sink += m.table() != nullptr ? 1 : 0;
  }
  t_counting = false;
  EXPECT_EQ(g_allocations.load(), 0);
  EXPECT_GT(sink, 0);
}

// Run by the isa_env_cap test with BITMIX_MAX_ISA=scalar: the variable is read at the first use
// and caps every module.
TEST(IsaTables, EnvironmentCapAppliesToEveryModule) {
  const char* env = std::getenv("BITMIX_MAX_ISA");
  if (env == nullptr || *env == '\0') GTEST_SKIP() << "BITMIX_MAX_ISA is not set (the isa_env_cap test sets it)";
  const Isa cap = parse_isa(env, "BITMIX_MAX_ISA");
  ASSERT_EQ(isa_cap(), cap);
  EXPECT_TRUE(detail::isa_level_features(cap).contains(detail::isa_level_features(active_isa())));
  if (cap == Isa::scalar) {
    EXPECT_EQ(active_isa(), Isa::scalar);
  }
  expect_every_module_follows(std::string("under BITMIX_MAX_ISA=") + env);
}

}  // namespace
}  // namespace bitmix
