// Environment variables that steer the library: BITMIX_NUM_THREADS and BITMIX_MAX_ISA.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"

namespace bitmix {
namespace {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      old_ = old;
      had_ = true;
    }
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(Environment, NumThreadsFromEnvironment) {
  {
    ScopedEnv env("BITMIX_NUM_THREADS", "3");
    EXPECT_EQ(default_num_threads(), 3);
  }
  ScopedEnv env("BITMIX_NUM_THREADS", nullptr);
  EXPECT_EQ(default_num_threads(), hardware_threads());
}

TEST(Environment, BadNumThreadsNamesTheVariable) {
  for (const char* bad : {"zero", "0", "-2", "4x", "99999"}) {
    ScopedEnv env("BITMIX_NUM_THREADS", bad);
    try {
      default_num_threads();
      FAIL() << "accepted BITMIX_NUM_THREADS=" << bad;
    } catch (const ArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("BITMIX_NUM_THREADS"), std::string::npos);
    }
  }
}

TEST(Environment, ParseIsaAcceptsNamesAndRejectsOthers) {
  EXPECT_EQ(parse_isa("scalar"), Isa::scalar);
  EXPECT_EQ(parse_isa("avx2"), Isa::avx2);
  EXPECT_EQ(parse_isa("avx512"), Isa::avx512);
  EXPECT_EQ(parse_isa("avx512vnni"), Isa::avx512vnni);
  EXPECT_EQ(parse_isa("neon"), Isa::neon);
  try {
    parse_isa("sse9", "BITMIX_MAX_ISA");
    FAIL();
  } catch (const ArgumentError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("BITMIX_MAX_ISA"), std::string::npos);
    EXPECT_NE(msg.find("avx512"), std::string::npos);
  }
}

TEST(Cpu, CapNeverRaisesAboveWhatIsAvailable) {
  const Isa best = best_isa();
  EXPECT_TRUE(isa_available(best));
  EXPECT_TRUE(isa_available(Isa::scalar));
  {
    ScopedIsaCap cap(Isa::scalar);
    EXPECT_EQ(active_isa(), Isa::scalar);
  }
  for (Isa isa : available_isas()) {
    ScopedIsaCap cap(isa);
    EXPECT_EQ(active_isa(), isa) << isa_name(isa);
  }
  {
    // A cap from another architecture leaves only the portable path.
    ScopedIsaCap cap(best == Isa::neon ? Isa::avx2 : Isa::neon);
    EXPECT_EQ(active_isa(), Isa::scalar);
  }
}

TEST(Cpu, SummaryNamesActivePath) {
  const std::string summary = cpu_summary();
  EXPECT_NE(summary.find(std::string("active: ") + std::string(isa_name(active_isa()))), std::string::npos);
}

TEST(Cpu, FeaturesAreConsistent) {
  const CpuFeatures& f = cpu_features();
  if (f.avx512vpopcntdq) {
    EXPECT_TRUE(f.avx512f);
  }
  if (f.avx512bw) {
    EXPECT_TRUE(f.avx512f);
  }
#if defined(__x86_64__)
  EXPECT_FALSE(f.neon);
#endif
#if defined(__aarch64__)
  EXPECT_TRUE(f.neon);
  EXPECT_FALSE(f.avx2);
#endif
}

}  // namespace
}  // namespace bitmix
