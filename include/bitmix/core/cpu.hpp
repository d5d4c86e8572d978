#pragma once
// CPU feature detection, done once, and the instruction-set cap.
//
// The library picks the best path the CPU supports among those compiled in, capped by
// BITMIX_MAX_ISA=scalar|avx2|avx512|avx512vnni|neon (or set_isa_cap()), so tests and benchmarks can run
// every path on one machine. Kernel APIs never take an ISA: each part of the library with
// per-ISA code chooses its function table once for the current cap and keeps it until the cap
// changes, so these queries cost nothing on the hot path and never allocate (except
// active_isa_tables(), a report).

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bitmix {

// The levels of x86-64 are scalar < avx2 < avx512 < avx512vnni (AVX-512 plus the VNNI int8 dot
// product), of AArch64 scalar < neon. The enumerators are not in that order (a new level is
// appended, so stored values keep their meaning).
enum class Isa { scalar, avx2, avx512, neon, avx512vnni };

struct CpuFeatures {
  std::string model_name;  // e.g. "AMD EPYC 9R14" (empty when unknown)
  bool popcnt = false;
  bool bmi1 = false;
  bool bmi2 = false;
  bool lzcnt = false;
  bool f16c = false;
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vpopcntdq = false;
  bool avx512vnni = false;
  bool avx_vnni = false;
  bool neon = false;
};

// Detected once (thread-safe) on first use.
const CpuFeatures& cpu_features();

std::string_view isa_name(Isa isa);
// Parses "scalar", "avx2", "avx512", "avx512vnni", "neon"; throws ArgumentError naming `what` and the
// accepted values otherwise.
Isa parse_isa(std::string_view text, std::string_view what = "ISA");

// True if this build contains the path and this CPU can run it.
bool isa_available(Isa isa);
// Every available ISA, scalar first (a list made once).
std::span<const Isa> available_isas();
// The best available ISA, ignoring any cap.
Isa best_isa();

// The cap: BITMIX_MAX_ISA from the environment (read at first use) unless overridden with
// set_isa_cap(). std::nullopt = no cap. An invalid BITMIX_MAX_ISA throws ArgumentError.
std::optional<Isa> isa_cap();
// Overrides the cap (std::nullopt removes it); every part of the library switches its tables on
// its next call. For tests, benchmarks and the CLI.
void set_isa_cap(std::optional<Isa> cap);
// The path the library uses now: the best available ISA not above the cap.
Isa active_isa();

// The function table a part of the library with per-ISA code uses now, e.g. {"sgemm", avx512}.
// A part may have no table for the active ISA (sgemm has none for neon) and use a lower one.
struct IsaTableChoice {
  std::string_view table;
  Isa isa;
};
// Every such part linked into this program, by name.
std::vector<IsaTableChoice> active_isa_tables();

// One line: "cpu: <model>; features: avx2 fma ...; compiled: scalar avx2 avx512; active: avx512"
std::string cpu_summary();

// Scoped cap for tests: caps to `isa` and restores the previous cap on destruction.
class ScopedIsaCap {
 public:
  explicit ScopedIsaCap(Isa isa);
  ~ScopedIsaCap();
  ScopedIsaCap(const ScopedIsaCap&) = delete;
  ScopedIsaCap& operator=(const ScopedIsaCap&) = delete;

 private:
  std::optional<Isa> previous_;
};

}  // namespace bitmix
