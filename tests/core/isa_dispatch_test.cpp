// The ISA-dispatch mechanism (src/core/isa_dispatch.hpp): which table is chosen for a CPU and a
// cap, including tables that need features beyond their level; that the choice is cached until
// the cap changes; and that readers racing cap changes always get a valid table.
#include "core/isa_dispatch.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

namespace bitmix::detail {
namespace {

// A fake module: its "tables" only say which level they were chosen for.
struct FakeTable {
  Isa isa;
};
constexpr FakeTable kFakeScalar{Isa::scalar};
[[maybe_unused]] constexpr FakeTable kFakeAvx2{Isa::avx2};
[[maybe_unused]] constexpr FakeTable kFakeAvx512{Isa::avx512};
[[maybe_unused]] constexpr FakeTable kFakeNeon{Isa::neon};
[[maybe_unused]] constexpr FakeTable kFakeAvx512VnniLevel{Isa::avx512vnni};

// The same shape as a real module's dispatcher: one table per compiled level.
constinit IsaDispatch<FakeTable> g_fake{"test.fake", {
#if defined(BITMIX_HAVE_AVX512VNNI)
    {Isa::avx512vnni, &kFakeAvx512VnniLevel},
#endif
#if defined(BITMIX_HAVE_AVX512)
    {Isa::avx512, &kFakeAvx512},
#endif
#if defined(BITMIX_HAVE_AVX2)
    {Isa::avx2, &kFakeAvx2},
#endif
#if defined(BITMIX_HAVE_NEON)
    {Isa::neon, &kFakeNeon},
#endif
    {Isa::scalar, &kFakeScalar},
}};

// A table that needs a feature beyond its level, declared as a module would.
constexpr FakeTable kFakeAvx512Vnni{Isa::avx512};
constinit IsaDispatch<FakeTable> g_fake_extra{"test.extra", {
    {Isa::avx512, &kFakeAvx512Vnni, IsaFeature::avx512vnni},
    {Isa::scalar, &kFakeScalar},
}};

bool is_fake_table(const FakeTable* t) {
  return t == &kFakeScalar || t == &kFakeAvx2 || t == &kFakeAvx512 || t == &kFakeNeon || t == &kFakeAvx512VnniLevel;
}

// Removes the cap for a scope and restores the previous one.
class ScopedNoCap {
 public:
  ScopedNoCap() : previous_(isa_cap()) { set_isa_cap(std::nullopt); }
  ~ScopedNoCap() { set_isa_cap(previous_); }
  ScopedNoCap(const ScopedNoCap&) = delete;
  ScopedNoCap& operator=(const ScopedNoCap&) = delete;

 private:
  std::optional<Isa> previous_;
};

// ---------------------------------------------------------------------------------------------
// The choice itself, on made-up CPUs: a family that is not a chain.

const IsaFeatures kAvx2 = isa_level_features(Isa::avx2);
const IsaFeatures kAvx512 = isa_level_features(Isa::avx512);

// Table ids; a variant's table points at one of them.
constexpr int kIds[] = {0, 1, 2, 3, 4, 5};
enum Id { vnni = 0, avxvnni = 1, avx512 = 2, avx2 = 3, neon = 4, scalar = 5 };

// Two AVX-512 tables that each need one more feature (neither implies the other), then the plain
// levels, best first, as a module would list them.
const IsaVariant kFamily[] = {
    {Isa::avx512, kAvx512 | IsaFeature::avx512vnni, &kIds[vnni]},
    {Isa::avx512, kAvx512 | IsaFeature::avx_vnni, &kIds[avxvnni]},
    {Isa::avx512, kAvx512, &kIds[avx512]},
    {Isa::avx2, kAvx2, &kIds[avx2]},
    {Isa::neon, isa_level_features(Isa::neon), &kIds[neon]},
    {Isa::scalar, {}, &kIds[scalar]},
};

int chosen(IsaFeatures cpu, std::optional<Isa> cap) {
  return *static_cast<const int*>(choose_isa_variant(kFamily, cpu, cap_allowance(cap)).table);
}

TEST(IsaDispatch, LevelsNestAndArchitecturesAreDisjoint) {
  EXPECT_TRUE(isa_level_features(Isa::scalar).empty());
  EXPECT_TRUE(kAvx512.contains(kAvx2));
  EXPECT_FALSE(kAvx2.contains(kAvx512));
  EXPECT_TRUE((kAvx512 & isa_level_features(Isa::neon)).empty());
  for (Isa isa : kEveryIsa) EXPECT_TRUE(cap_allowance(std::nullopt).contains(isa_level_features(isa)));
}

TEST(IsaDispatch, ChoosesTheFirstTableTheCpuHasAndTheCapAllows) {
  const IsaFeatures both = kAvx512 | IsaFeature::avx512vnni | IsaFeature::avx_vnni;
  EXPECT_EQ(chosen(both, std::nullopt), vnni);  // listed first
  EXPECT_EQ(chosen(kAvx512 | IsaFeature::avx_vnni, std::nullopt), avxvnni);
  EXPECT_EQ(chosen(kAvx512 | IsaFeature::avx512vnni, std::nullopt), vnni);
  EXPECT_EQ(chosen(kAvx512, std::nullopt), avx512);
  EXPECT_EQ(chosen(kAvx2 | IsaFeature::avx512f, std::nullopt), avx2);  // AVX-512 needs all five
  EXPECT_EQ(chosen(isa_level_features(Isa::neon), std::nullopt), neon);
  EXPECT_EQ(chosen(IsaFeature::popcnt, std::nullopt), scalar);
}

TEST(IsaDispatch, ExtraFeaturesAreAboveTheCapOfTheirLevel) {
  const IsaFeatures cpu = kAvx512 | IsaFeature::avx512vnni | IsaFeature::avx_vnni;
  EXPECT_EQ(chosen(cpu, Isa::avx512), avx512);  // VNNI is not part of the avx512 level
  EXPECT_EQ(chosen(cpu, Isa::avx2), avx2);
  EXPECT_EQ(chosen(cpu, Isa::scalar), scalar);
  EXPECT_EQ(chosen(cpu, Isa::neon), scalar);  // another architecture's cap: only the portable table
  EXPECT_EQ(chosen(kAvx2, Isa::avx512), avx2);  // a cap above the CPU changes nothing
}

TEST(IsaDispatch, RefusesAListWithoutAPortableLastTable) {
  // (Parenthesized: the braces hold commas the macro would split at.)
  EXPECT_THROW((IsaDispatch<FakeTable>("test.bad", {{Isa::avx2, &kFakeAvx2}})), Error);
  EXPECT_THROW((IsaDispatch<FakeTable>("test.bad", {{Isa::scalar, &kFakeScalar}, {Isa::avx2, &kFakeAvx2}})), Error);
  EXPECT_THROW((IsaDispatch<FakeTable>("test.bad", {})), Error);
}

// ---------------------------------------------------------------------------------------------
// A dispatcher: follows the cap, caches, survives concurrent cap changes.

TEST(IsaDispatch, FollowsEveryCapLikeActiveIsa) {
  {
    ScopedNoCap no_cap;
    EXPECT_EQ(g_fake.active().isa, best_isa());
    EXPECT_EQ(active_isa(), best_isa());
  }
  for (Isa isa : available_isas()) {
    ScopedIsaCap cap(isa);
    EXPECT_EQ(active_isa(), isa);
    EXPECT_EQ(g_fake.active().isa, isa) << isa_name(isa);
    EXPECT_EQ(g_fake.active_variant().isa, isa);
    // The table data laid out under a cap belongs to is the one chosen under it.
    EXPECT_EQ(&g_fake.for_isa(isa), &g_fake.active());
  }
}

TEST(IsaDispatch, ATableWithExtraFeaturesNeedsThemOnTheCpuAndUnderTheCap) {
  const bool cpu_has_it = cpu_isa_features().contains(isa_level_features(Isa::avx512) | IsaFeature::avx512vnni);
  {
    ScopedNoCap no_cap;
    EXPECT_EQ(&g_fake_extra.active(), cpu_has_it ? &kFakeAvx512Vnni : &kFakeScalar);
  }
  for (Isa isa : available_isas()) {
    ScopedIsaCap cap(isa);  // only the avx512vnni level includes VNNI: every other cap excludes the table
    EXPECT_EQ(&g_fake_extra.active(), isa == Isa::avx512vnni ? &kFakeAvx512Vnni : &kFakeScalar) << isa_name(isa);
  }
}

TEST(IsaDispatch, ChoosesOncePerCap) {
  const FakeTable* first = &g_fake.active();
  const uint64_t choices = g_fake.choices();
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(&g_fake.active(), first);
  EXPECT_EQ(g_fake.choices(), choices) << "chose again without a cap change";
  {
    ScopedIsaCap cap(Isa::scalar);
    EXPECT_EQ(&g_fake.active(), &kFakeScalar);
    EXPECT_EQ(g_fake.choices(), choices + 1);
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(&g_fake.active(), &kFakeScalar);
    EXPECT_EQ(g_fake.choices(), choices + 1);
  }
  EXPECT_EQ(&g_fake.active(), first);  // the cap is back: so is the table
  EXPECT_EQ(g_fake.choices(), choices + 2);
}

TEST(IsaDispatch, ListsItsChoice) {
  g_fake.active();
  bool found = false;
  for (const IsaTableChoice& t : active_isa_tables()) {
    if (t.table != "test.fake") continue;
    found = true;
    EXPECT_EQ(t.isa, g_fake.active().isa);
  }
  EXPECT_TRUE(found);
  ScopedIsaCap cap(Isa::scalar);
  for (const IsaTableChoice& t : active_isa_tables()) EXPECT_EQ(t.isa, Isa::scalar) << t.table;
}

TEST(IsaDispatch, ReadersRacingCapChangesAlwaysGetAValidTable) {
  const std::span<const Isa> isas = available_isas();
  std::atomic<bool> stop{false};
  std::atomic<int> invalid{0};
  std::atomic<int64_t> reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r)
    readers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        const FakeTable* t = &g_fake.active();
        const Isa level = active_isa();
        if (!is_fake_table(t) || !isa_available(level)) invalid.fetch_add(1);
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
  // Settled: the choice matches the cap again.
  ScopedIsaCap cap(Isa::scalar);
  EXPECT_EQ(&g_fake.active(), &kFakeScalar);
}

}  // namespace
}  // namespace bitmix::detail
