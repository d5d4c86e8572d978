#pragma once
// The one ISA-dispatch mechanism of bitmix. Every module with per-ISA code (core's sgemm,
// kernels' bit-serial convolution, quant's elementwise kernels, and active_isa() itself) picks
// its function table here; modules include it as "core/isa_dispatch.hpp" through their private
// src/ include path. Nothing of it is public: include/bitmix/core/cpu.hpp has the cap and the
// queries users see.
//
// HOW A TABLE IS CHOSEN
//   * The CPU is detected once (cpu_features()); what it can run becomes an IsaFeatures set
//     (cpu_isa_features()).
//   * Each ISA level, the Isa enum that BITMIX_MAX_ISA names, stands for the features its code
//     may use (isa_level_features(): exactly what its flags in cmake/BitmixIsa.cmake enable). A
//     cap at a level allows that level's features; no cap allows all (cap_allowance()).
//   * A module lists its tables best first, each with the level it belongs to (what it reports)
//     and the features its code needs: its level's, plus any extra ones. The active table is the
//     first one whose features the CPU has and the cap allows (choose_isa_variant()). The last
//     table must need nothing (the portable one), so there is always an answer; the constructor
//     checks that, at compile time for a constinit dispatcher.
//   So "the best table not above the cap" does not assume a linear chain: a table is above the
//   cap when it needs a feature the cap's level does not include.
//
// CACHING AND THREADS
//   An IsaDispatch keeps its choice in an atomic pointer. The hot path (active()) is one acquire
//   load and a null test. The choice is made, and the pointer stored, under one mutex; the cap
//   changes (set_isa_cap(), ScopedIsaCap) under the same mutex and clear the pointer of every
//   dispatcher that has ever chosen, so a choice can never be stored for a stale cap, and every
//   module switches on its next call. BITMIX_MAX_ISA is read under that mutex before the first
//   choice. A thread racing a cap change gets the old or the new table, both valid.
//   A dispatcher must have static storage duration (it stays on the invalidation list for the
//   rest of the program); declare it constinit so it works before static initialization too.
//   choices() counts how often it chose (tests check the cache with it); active_isa_tables()
//   reports every named dispatcher's current choice (bitmix info prints it).
//
// DECLARING A MODULE'S TABLES (in a baseline translation unit of the module, never in an ISA one)
//
//   constinit bitmix::detail::IsaDispatch<KernelTable> g_tables{"kernels", {
//   #if defined(BITMIX_HAVE_AVX512)
//       {Isa::avx512, &kAvx512Table},
//   #endif
//   #if defined(BITMIX_HAVE_AVX2)
//       {Isa::avx2, &kAvx2Table},
//   #endif
//       {Isa::scalar, &kScalarTable},
//   }};
//   [[maybe_unused]] const bool g_tables_listed = g_tables.list();  // in active_isa_tables()
//
//   const KernelTable& kernel_table() { return g_tables.active(); }        // the hot path
//   const KernelTable& t = g_tables.for_isa(packed.isa());  // the table data was laid out for
//
// A table that needs features beyond its level adds them as a third member, e.g.
//   {Isa::avx512, &kAvx512VbmiTable, IsaFeature::avx512vbmi},   // listed before kAvx512Table
// It is chosen only when the CPU has them and the cap allows them (no cap, or a cap at a level
// that includes them); otherwise the next table in the list is.
//
// HOW A NEW FAMILY PLUGS IN (e.g. avx512vnni = AVX-512 + VNNI, amx, AVX-512 VBMI, NEON dotprod)
//   1. A feature not yet known: an IsaFeature bit here, its CpuFeatures field and detection in
//      cpu.cpp, its bit in cpu_isa_features() (isa_dispatch.cpp).
//   2. If caps should select or exclude it (so the tests can run every table on one machine):
//      an Isa enumerator with its name (isa_name/parse_isa in cpu.cpp), its features here in
//      isa_level_features() (its parent's plus the new bits; levels need not form a chain: two
//      levels may each add a different feature to avx512), its compile flags and BITMIX_HAVE_*
//      definition in cmake/BitmixIsa.cmake, its entry in kEveryIsa below and in the level
//      dispatcher of isa_dispatch.cpp (g_levels, before the levels it beats). A level without
//      a table in some module is fine: that module chooses its best table the level allows.
//   3. Each module that gains a table: the ISA translation unit (the rule below), and one entry
//      in its dispatcher's list before the tables it beats. Nothing else changes.
//
// THE RULE FOR ISA TRANSLATION UNITS (sources compiled with ISA flags, and the portable table
// sources beside them): src/core/sgemm_{scalar,avx2,avx512}.cpp, src/kernels/{scalar,avx2,
// avx512,neon}/kernels_*.cpp, src/quant/elementwise_{scalar,avx2,avx512}.cpp.
//   * Exactly one symbol has external linkage: the TU's table, a constinit const object declared
//     extern in the module's table header. Everything else is in an anonymous namespace.
//   * The TU must not odr-use any inline function or template with external linkage that is
//     declared outside its anonymous namespace: no std:: algorithms or containers (std::min,
//     std::vector, std::popcount), no inline members of public types (ActivationQuant::max_code),
//     no inline helpers of shared headers unless the header gives them internal linkage (as
//     src/kernels/layout.hpp and scalar/scalar_kernels.hpp do). Such a function may be emitted
//     out of line (at -O0 always) as a weak (COMDAT) symbol compiled with this TU's -m flags, the
//     linker keeps one copy for every caller in the program, and an AVX-512 copy faults on an
//     older CPU. Compiler builtins and intrinsics (always inlined), calls to non-inline functions
//     (compiled with the baseline flags elsewhere: memcpy, operator new) and constants used by
//     value are fine.
//   * No dynamic initialization: it would run ISA code at program start, before any check of
//     the CPU. The table is constant-initialized (constinit).
//   * This header is not included there (it has inline functions and templates); the module's
//     table header (plain structs, function pointer types, extern tables) is.
//   The isa_symbols test (tests/isa/check_isa_symbols.cmake) checks every such object with nm,
//   as built into the library and compiled again with -O0 (where nothing is inlined away): one
//   defined external data symbol, no weak one, no static initializer. A new ISA TU is declared
//   to it with bitmix_isa_translation_units() in its module's CMakeLists.txt.

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"

namespace bitmix::detail {

// A CPU feature that code compiled with some -m flag relies on.
enum class IsaFeature : uint8_t {
  popcnt,
  bmi1,
  bmi2,
  lzcnt,
  f16c,
  fma,
  avx2,
  avx512f,
  avx512bw,
  avx512vl,
  avx512dq,
  avx512vpopcntdq,
  avx512vnni,
  avx_vnni,
  neon,
};

// A set of IsaFeature (one bit each).
class IsaFeatures {
 public:
  constexpr IsaFeatures() noexcept = default;
  constexpr IsaFeatures(IsaFeature feature) noexcept : bits_(uint64_t{1} << static_cast<unsigned>(feature)) {}
  constexpr IsaFeatures(std::initializer_list<IsaFeature> features) noexcept {
    for (IsaFeature f : features) bits_ |= IsaFeatures(f).bits_;
  }
  static constexpr IsaFeatures all() noexcept {
    IsaFeatures s;
    s.bits_ = ~uint64_t{0};
    return s;
  }
  constexpr bool contains(IsaFeatures other) const noexcept { return (other.bits_ & ~bits_) == 0; }
  constexpr bool empty() const noexcept { return bits_ == 0; }
  friend constexpr IsaFeatures operator|(IsaFeatures a, IsaFeatures b) noexcept {
    a.bits_ |= b.bits_;
    return a;
  }
  friend constexpr IsaFeatures operator&(IsaFeatures a, IsaFeatures b) noexcept {
    a.bits_ &= b.bits_;
    return a;
  }
  friend constexpr bool operator==(IsaFeatures, IsaFeatures) noexcept = default;

 private:
  uint64_t bits_ = 0;
};

// The features code of an ISA level may use: what its flags in cmake/BitmixIsa.cmake enable, so
// what the CPU must have to run it and what a cap at that level allows.
constexpr IsaFeatures isa_level_features(Isa isa) noexcept {
  constexpr IsaFeatures avx2{IsaFeature::popcnt, IsaFeature::bmi1, IsaFeature::bmi2, IsaFeature::lzcnt,
                             IsaFeature::f16c,   IsaFeature::fma,  IsaFeature::avx2};
  constexpr IsaFeatures avx512 = avx2 | IsaFeatures{IsaFeature::avx512f, IsaFeature::avx512bw, IsaFeature::avx512vl,
                                                    IsaFeature::avx512dq, IsaFeature::avx512vpopcntdq};
  switch (isa) {
    case Isa::scalar: return {};
    case Isa::avx2: return avx2;
    case Isa::avx512: return avx512;
    case Isa::neon: return IsaFeature::neon;
    case Isa::avx512vnni: return avx512 | IsaFeature::avx512vnni;
  }
  return {};
}

// What a cap allows: every feature without one, its level's features with one. A cap naming
// another architecture's level therefore leaves only the portable tables.
constexpr IsaFeatures cap_allowance(std::optional<Isa> cap) noexcept {
  return cap ? isa_level_features(*cap) : IsaFeatures::all();
}

// Every Isa enumerator, in enum order.
inline constexpr Isa kEveryIsa[] = {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon, Isa::avx512vnni};

// What this CPU can run, detected once.
IsaFeatures cpu_isa_features();
// True if the level is compiled into this build (its code exists; the CPU may still lack it).
bool isa_compiled(Isa isa) noexcept;

// One table of a module, type-erased.
struct IsaVariant {
  Isa isa = Isa::scalar;   // the level it belongs to (and reports)
  IsaFeatures features{};  // everything its code needs: its level's features and any extra ones
  const void* table = nullptr;
};

// The first variant whose features `cpu` has and `allowed` permits. `variants` must end with one
// that needs no feature (IsaDispatch checks it), so there always is one.
constexpr const IsaVariant& choose_isa_variant(std::span<const IsaVariant> variants, IsaFeatures cpu,
                                               IsaFeatures allowed) noexcept {
  const IsaFeatures usable = cpu & allowed;
  for (std::size_t i = 0; i + 1 < variants.size(); ++i)
    if (usable.contains(variants[i].features)) return variants[i];
  return variants.back();
}

// The untyped part of IsaDispatch (see the top of this file).
class IsaDispatchBase {
 public:
  IsaDispatchBase(const IsaDispatchBase&) = delete;
  IsaDispatchBase& operator=(const IsaDispatchBase&) = delete;

  // The variant for the current cap: the hot path, chosen once per cap.
  const IsaVariant& active_variant() const {
    const IsaVariant* chosen = chosen_.load(std::memory_order_acquire);
    if (chosen != nullptr) [[likely]]
      return *chosen;
    return choose();
  }
  // The variant active_variant() gives while `isa` is the cap, on this CPU: the table that data
  // laid out while `isa` was active (active_isa()) belongs to. Not cached (a short loop).
  const IsaVariant& variant_for(Isa isa) const;

  std::string_view name() const noexcept { return name_; }
  std::span<const IsaVariant> variants() const noexcept { return {variants_, static_cast<std::size_t>(count_)}; }
  // Lists this dispatcher in active_isa_tables() (it is listed at its first use anyway); for a
  // namespace-scope `const bool` so that a program lists its tables before using them.
  bool list() const;
  // How often a table has been chosen (the slow path ran): once per cap in use, for tests.
  uint64_t choices() const noexcept { return choices_.load(std::memory_order_relaxed); }

 protected:
  static constexpr int kMaxVariants = 8;

  constexpr explicit IsaDispatchBase(std::string_view name) noexcept : name_(name) {}
  ~IsaDispatchBase() = default;  // trivial: nothing to tear down at exit

  constexpr void add(const IsaVariant& variant) {
    if (count_ == kMaxVariants) throw Error("IsaDispatch: more tables than kMaxVariants");
    // Skipped during constant evaluation: there every table is the address of a named constant,
    // and GCC's sanitizers make "&extern_object == nullptr" a non-constant expression, which
    // would turn every constinit dispatch table into a compile error in the sanitizer build.
    if (!std::is_constant_evaluated() && variant.table == nullptr)
      throw Error("IsaDispatch: a null table");
    variants_[count_++] = variant;
  }
  // The constructor's final check: the last table must need nothing, so that one always fits.
  constexpr void check_complete() const {
    if (count_ == 0 || !variants_[count_ - 1].features.empty())
      throw Error("IsaDispatch: the last table must be the portable one (needing no feature)");
  }

 private:
  friend struct IsaDispatchRegistry;

  const IsaVariant& choose() const;  // the slow path, under the dispatch mutex

  std::string_view name_;
  IsaVariant variants_[kMaxVariants]{};
  int count_ = 0;
  mutable std::atomic<const IsaVariant*> chosen_{nullptr};
  mutable std::atomic<uint64_t> choices_{0};
  mutable const IsaDispatchBase* next_ = nullptr;  // every dispatcher that chose or was listed
  mutable bool linked_ = false;                    // (both under the dispatch mutex)
};

// A module's per-ISA function tables of type Table, and the one it uses now.
template <class Table>
class IsaDispatch : public IsaDispatchBase {
 public:
  struct Entry {
    Isa isa;
    const Table* table;
    IsaFeatures extra{};  // features needed beyond the level's
  };

  // `name` is what active_isa_tables() reports ("" hides it); `entries` best first, the portable
  // table last.
  constexpr IsaDispatch(std::string_view name, std::initializer_list<Entry> entries) : IsaDispatchBase(name) {
    for (const Entry& e : entries) add(IsaVariant{e.isa, isa_level_features(e.isa) | e.extra, e.table});
    check_complete();
  }

  const Table& active() const { return *static_cast<const Table*>(active_variant().table); }
  const Table& for_isa(Isa isa) const { return *static_cast<const Table*>(variant_for(isa).table); }
};

}  // namespace bitmix::detail
