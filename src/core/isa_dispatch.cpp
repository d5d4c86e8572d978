// The ISA cap, the dispatchers' choice and its invalidation, and the ISA queries of cpu.hpp that
// follow from them. The design is described in isa_dispatch.hpp.
#include "core/isa_dispatch.hpp"

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <mutex>
#include <vector>

namespace bitmix {
namespace detail {
namespace {

constexpr int kNoCap = -1;
constexpr int kCapUnread = -2;

// Guards the cap's changes, every dispatcher's choice and the list of dispatchers.
constinit std::mutex g_mutex;
// The cap as an Isa value, kNoCap, or kCapUnread before BITMIX_MAX_ISA has been read. Written
// under g_mutex; read without it by isa_cap().
constinit std::atomic<int> g_cap{kCapUnread};
// The first of every dispatcher that has chosen a table or was listed (a singly linked list
// through the dispatchers themselves, which all live until the end of the program). Under g_mutex.
const IsaDispatchBase* g_first = nullptr;

std::optional<Isa> cap_of(int code) {
  if (code == kNoCap) return std::nullopt;
  return static_cast<Isa>(code);
}

// Under g_mutex: the cap, reading BITMIX_MAX_ISA at the first call (a bad value throws and leaves
// it unread, so every later call throws the same error).
std::optional<Isa> cap_locked() {
  int code = g_cap.load(std::memory_order_relaxed);
  if (code == kCapUnread) {
    const char* env = std::getenv("BITMIX_MAX_ISA");
    code = env == nullptr || *env == '\0' ? kNoCap : static_cast<int>(parse_isa(env, "BITMIX_MAX_ISA"));
    g_cap.store(code, std::memory_order_release);
  }
  return cap_of(code);
}

// active_isa() is a dispatch like any other: over the levels compiled in, best first, each
// "table" the Isa value itself. It is not listed in active_isa_tables() (no name).
constexpr Isa kLevelValues[] = {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon, Isa::avx512vnni};
constexpr const Isa* level_value(Isa isa) { return &kLevelValues[static_cast<int>(isa)]; }
constinit const IsaDispatch<Isa> g_levels{"", {
#if defined(BITMIX_HAVE_AVX512VNNI)
    {Isa::avx512vnni, level_value(Isa::avx512vnni)},
#endif
#if defined(BITMIX_HAVE_AVX512)
    {Isa::avx512, level_value(Isa::avx512)},
#endif
#if defined(BITMIX_HAVE_AVX2)
    {Isa::avx2, level_value(Isa::avx2)},
#endif
#if defined(BITMIX_HAVE_NEON)
    {Isa::neon, level_value(Isa::neon)},
#endif
    {Isa::scalar, level_value(Isa::scalar)},
}};

}  // namespace

// The list of dispatchers (g_first), all under g_mutex.
struct IsaDispatchRegistry {
  static void link_locked(const IsaDispatchBase& d) {
    if (d.linked_) return;
    d.next_ = g_first;
    d.linked_ = true;
    g_first = &d;
  }
  static void invalidate_all_locked() {
    for (const IsaDispatchBase* d = g_first; d != nullptr; d = d->next_) d->chosen_.store(nullptr, std::memory_order_release);
  }
  static std::vector<IsaTableChoice> report_locked() {
    const IsaFeatures cpu = cpu_isa_features();
    const IsaFeatures allowed = cap_allowance(cap_locked());
    std::vector<IsaTableChoice> out;
    for (const IsaDispatchBase* d = g_first; d != nullptr; d = d->next_)
      if (!d->name().empty()) out.push_back({d->name(), choose_isa_variant(d->variants(), cpu, allowed).isa});
    std::sort(out.begin(), out.end(), [](const IsaTableChoice& a, const IsaTableChoice& b) { return a.table < b.table; });
    return out;
  }
};

const IsaVariant& IsaDispatchBase::choose() const {
  std::lock_guard<std::mutex> lock(g_mutex);
  const IsaVariant* chosen = chosen_.load(std::memory_order_relaxed);
  if (chosen == nullptr) {
    chosen = &choose_isa_variant(variants(), cpu_isa_features(), cap_allowance(cap_locked()));
    IsaDispatchRegistry::link_locked(*this);
    chosen_.store(chosen, std::memory_order_release);
    choices_.fetch_add(1, std::memory_order_relaxed);
  }
  return *chosen;
}

const IsaVariant& IsaDispatchBase::variant_for(Isa isa) const {
  return choose_isa_variant(variants(), cpu_isa_features(), isa_level_features(isa));
}

bool IsaDispatchBase::list() const {
  std::lock_guard<std::mutex> lock(g_mutex);
  IsaDispatchRegistry::link_locked(*this);
  return true;
}

IsaFeatures cpu_isa_features() {
  static const IsaFeatures features = [] {
    const CpuFeatures& f = cpu_features();
    IsaFeatures s;
    auto add = [&s](bool has, IsaFeature feature) {
      if (has) s = s | feature;
    };
    add(f.popcnt, IsaFeature::popcnt);
    add(f.bmi1, IsaFeature::bmi1);
    add(f.bmi2, IsaFeature::bmi2);
    add(f.lzcnt, IsaFeature::lzcnt);
    add(f.f16c, IsaFeature::f16c);
    add(f.fma, IsaFeature::fma);
    add(f.avx2, IsaFeature::avx2);
    add(f.avx512f, IsaFeature::avx512f);
    add(f.avx512bw, IsaFeature::avx512bw);
    add(f.avx512vl, IsaFeature::avx512vl);
    add(f.avx512dq, IsaFeature::avx512dq);
    add(f.avx512vpopcntdq, IsaFeature::avx512vpopcntdq);
    add(f.avx512vnni, IsaFeature::avx512vnni);
    add(f.avx_vnni, IsaFeature::avx_vnni);
    add(f.neon, IsaFeature::neon);
    return s;
  }();
  return features;
}

bool isa_compiled(Isa isa) noexcept {
  for (const IsaVariant& v : g_levels.variants())
    if (v.isa == isa) return true;
  return false;
}

}  // namespace detail

bool isa_available(Isa isa) {
  return detail::isa_compiled(isa) && detail::cpu_isa_features().contains(detail::isa_level_features(isa));
}

std::span<const Isa> available_isas() {
  struct List {
    Isa isas[std::size(detail::kEveryIsa)] = {};
    std::size_t count = 0;
  };
  static const List list = [] {
    List l;
    for (Isa isa : detail::kEveryIsa)
      if (isa_available(isa)) l.isas[l.count++] = isa;
    return l;
  }();
  return {list.isas, list.count};
}

Isa best_isa() {
  static const Isa best =
      detail::choose_isa_variant(detail::g_levels.variants(), detail::cpu_isa_features(), detail::IsaFeatures::all())
          .isa;
  return best;
}

Isa active_isa() { return detail::g_levels.active(); }

std::optional<Isa> isa_cap() {
  const int code = detail::g_cap.load(std::memory_order_acquire);
  if (code != detail::kCapUnread) return detail::cap_of(code);
  std::lock_guard<std::mutex> lock(detail::g_mutex);
  return detail::cap_locked();
}

void set_isa_cap(std::optional<Isa> cap) {
  std::lock_guard<std::mutex> lock(detail::g_mutex);
  detail::g_cap.store(cap ? static_cast<int>(*cap) : detail::kNoCap, std::memory_order_release);
  detail::IsaDispatchRegistry::invalidate_all_locked();
}

std::vector<IsaTableChoice> active_isa_tables() {
  std::lock_guard<std::mutex> lock(detail::g_mutex);
  return detail::IsaDispatchRegistry::report_locked();
}

ScopedIsaCap::ScopedIsaCap(Isa isa) : previous_(isa_cap()) { set_isa_cap(isa); }
ScopedIsaCap::~ScopedIsaCap() { set_isa_cap(previous_); }

}  // namespace bitmix
