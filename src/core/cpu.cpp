#include "bitmix/core/cpu.hpp"

#include <fmt/format.h>

#include <cstring>

#include "bitmix/core/error.hpp"
#include "core/isa_dispatch.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define BITMIX_X86 1
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace bitmix {
namespace {

#if BITMIX_X86
// XCR0: which register states the OS saves. AVX needs XMM|YMM (bits 1, 2); AVX-512 also needs
// opmask, ZMM_Hi256 and Hi16_ZMM (bits 5, 6, 7). A CPU flag without OS support still faults.
uint64_t read_xcr0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if BITMIX_X86
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const unsigned max_leaf = __get_cpuid_max(0, nullptr);
  bool os_avx = false, os_avx512 = false;
  if (max_leaf >= 1) {
    __cpuid_count(1, 0, eax, ebx, ecx, edx);
    f.popcnt = (ecx >> 23) & 1;
    f.fma = (ecx >> 12) & 1;
    f.f16c = (ecx >> 29) & 1;
    const bool osxsave = (ecx >> 27) & 1;
    const bool avx = (ecx >> 28) & 1;
    if (osxsave && avx) {
      const uint64_t xcr0 = read_xcr0();
      os_avx = (xcr0 & 0x6) == 0x6;
      os_avx512 = (xcr0 & 0xe6) == 0xe6;
    }
  }
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    f.avx2 = os_avx && ((ebx >> 5) & 1);
    f.bmi1 = (ebx >> 3) & 1;
    f.bmi2 = (ebx >> 8) & 1;
    f.avx512f = os_avx512 && ((ebx >> 16) & 1);
    f.avx512dq = os_avx512 && ((ebx >> 17) & 1);
    f.avx512bw = os_avx512 && ((ebx >> 30) & 1);
    f.avx512vl = os_avx512 && ((ebx >> 31) & 1);
    f.avx512vnni = os_avx512 && ((ecx >> 11) & 1);
    f.avx512vpopcntdq = os_avx512 && ((ecx >> 14) & 1);
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    f.avx_vnni = os_avx && ((eax >> 4) & 1);
  }
  f.fma = f.fma && os_avx;
  f.f16c = f.f16c && os_avx;
  const unsigned max_extended = __get_cpuid_max(0x80000000, nullptr);
  if (max_extended >= 0x80000001) {
    __cpuid(0x80000001, eax, ebx, ecx, edx);
    f.lzcnt = (ecx >> 5) & 1;  // ABM
  }
  if (max_extended >= 0x80000004) {
    char brand[49] = {};
    for (unsigned leaf = 0; leaf < 3; ++leaf) {
      unsigned regs[4];
      __cpuid(0x80000002 + leaf, regs[0], regs[1], regs[2], regs[3]);
      std::memcpy(brand + 16 * leaf, regs, 16);
    }
    std::string name(brand);
    const auto first = name.find_first_not_of(' ');
    const auto last = name.find_last_not_of(' ');
    if (first != std::string::npos) f.model_name = name.substr(first, last - first + 1);
  }
#elif defined(__aarch64__)
#if defined(__linux__)
  f.neon = (getauxval(AT_HWCAP) & (1UL << 1)) != 0;  // HWCAP_ASIMD
#else
  f.neon = true;  // Advanced SIMD is mandatory in AArch64
#endif
  f.popcnt = f.neon;
  f.model_name = "AArch64";
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
    case Isa::avx512vnni: return "avx512vnni";
  }
  return "unknown";
}

Isa parse_isa(std::string_view text, std::string_view what) {
  for (Isa isa : detail::kEveryIsa)
    if (text == isa_name(isa)) return isa;
  throw ArgumentError(fmt::format("{}='{}': expected one of scalar, avx2, avx512, avx512vnni, neon", what, text));
}

std::string cpu_summary() {
  const CpuFeatures& f = cpu_features();
  std::string features;
  auto add = [&](bool has, const char* name) {
    if (!has) return;
    if (!features.empty()) features += ' ';
    features += name;
  };
  add(f.popcnt, "popcnt");
  add(f.bmi1, "bmi1");
  add(f.bmi2, "bmi2");
  add(f.lzcnt, "lzcnt");
  add(f.f16c, "f16c");
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512dq, "avx512dq");
  add(f.avx512vpopcntdq, "avx512vpopcntdq");
  add(f.avx512vnni, "avx512vnni");
  add(f.avx_vnni, "avxvnni");
  add(f.neon, "neon");
  std::string compiled;
  for (Isa isa : detail::kEveryIsa) {
    if (!detail::isa_compiled(isa)) continue;
    if (!compiled.empty()) compiled += ' ';
    compiled += isa_name(isa);
  }
  const std::optional<Isa> cap = isa_cap();
  return fmt::format("cpu: {}; features: {}; compiled: {}; cap: {}; active: {}",
                     f.model_name.empty() ? "unknown" : f.model_name, features.empty() ? "none" : features,
                     compiled, cap ? isa_name(*cap) : std::string_view("none"), isa_name(active_isa()));
}

}  // namespace bitmix
