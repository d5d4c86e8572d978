// Whole models give bit-identical logits whichever kernel family runs their layers: ResNet-20
// at uniform and mixed bitwidths, each family forced on every layer (SessionOptions and
// BITMIX_KERNEL_FAMILY) against the per-layer automatic choice, on every ISA path here.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "deploy_test_util.hpp"

namespace bitmix::deploy {
namespace {

using kernels::KernelFamily;
using testing::QatNet;

QatNet resnet20(int w, int a, uint64_t seed, bool mixed) {
  nn::UniformBits bits{w, a};
  if (!mixed) return testing::make_qat_net("resnet20", bits, seed, nn::ShortcutOption::A, 16);
  bits.policy = quant::BitPolicy::none();
  Rng pick(seed);
  return testing::make_qat_net("resnet20", bits, seed, nn::ShortcutOption::B, 16, [&](quant::BitConfig& c) {
    const int choices[] = {1, 2, 3, 4, 6, 8};
    for (std::size_t i = 0; i < c.layers.size(); ++i) {
      c.layers[i].w_bits = choices[pick.below(6)];
      c.layers[i].a_bits = choices[pick.below(6)];
      if (i == 0 && c.layers[i].a_bits == 1) c.layers[i].a_bits = 2;  // signed LSQ input needs 2 bits
    }
    c.policy = quant::BitPolicy::none();
  });
}

// Forcing a family must really reach every convolution that does not run as a float GEMM.
void expect_family_everywhere(const runtime::Session& s, KernelFamily family) {
  const auto& ops = s.model().ops();
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind != runtime::OpKind::conv2d && ops[i].kind != runtime::OpKind::linear) {
      EXPECT_EQ(s.kernel_family(i), KernelFamily::automatic);
      continue;
    }
    if (s.runs_as_float_gemm(i)) continue;
    EXPECT_EQ(s.kernel_family(i), family) << ops[i].name;
  }
}

struct FamilyCase {
  const char* name;
  int w, a;
  bool mixed;
};

class WholeModelFamilies : public ::testing::TestWithParam<FamilyCase> {};

TEST_P(WholeModelFamilies, EveryFamilyGivesTheSameLogitsOnEveryPath) {
  const FamilyCase& fc = GetParam();
  QatNet net = resnet20(fc.w, fc.a, 71 + static_cast<uint64_t>(fc.w * 8 + fc.a), fc.mixed);
  const runtime::Model model = testing::compile_net(net);
  Rng rng(5);
  Tensor images({3, 3, 12, 12});
  for (float& v : images.values()) v = static_cast<float>(rng.below(256)) / 255.0f;
  runtime::Session reference(model, runtime::SessionOptions{});
  const Tensor expected = reference.run(images);
  for (Isa isa : available_isas()) {
    ScopedIsaCap cap(isa);
    for (KernelFamily family : {KernelFamily::automatic, KernelFamily::popcount, KernelFamily::int8}) {
      runtime::SessionOptions o;
      o.kernel_family = family;
      runtime::Session session(model, o);
      if (family != KernelFamily::automatic) expect_family_everywhere(session, family);
      const Tensor logits = session.run(images);
      ASSERT_EQ(logits.shape(), expected.shape());
      EXPECT_TRUE(testing::same_bits(logits.data(), expected.data(), logits.numel()))
          << fc.name << " path " << isa_name(isa) << " family " << kernels::kernel_family_name(family);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ResNet20, WholeModelFamilies,
                         ::testing::Values(FamilyCase{"W1A1", 1, 1, false}, FamilyCase{"W2A2", 2, 2, false},
                                           FamilyCase{"W4A4", 4, 4, false}, FamilyCase{"W8A8", 8, 8, false},
                                           FamilyCase{"Mixed", 2, 2, true}),
                         [](const ::testing::TestParamInfo<FamilyCase>& p) { return std::string(p.param.name); });

// Sets an environment variable for the scope and restores the previous value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      had_ = true;
      old_ = old;
    }
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) ::setenv(name_, old_.c_str(), 1);
    else ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

TEST(KernelFamilyChoice, EnvironmentForcesAFamilyAndOptionsWinOverIt) {
  QatNet net = resnet20(2, 2, 91, false);
  const runtime::Model model = testing::compile_net(net);
  {
    ScopedEnv env("BITMIX_KERNEL_FAMILY", "int8");
    expect_family_everywhere(runtime::Session(model), KernelFamily::int8);
    runtime::SessionOptions o;
    o.kernel_family = KernelFamily::popcount;
    expect_family_everywhere(runtime::Session(model, o), KernelFamily::popcount);
  }
  {
    ScopedEnv env("BITMIX_KERNEL_FAMILY", "popcount");
    expect_family_everywhere(runtime::Session(model), KernelFamily::popcount);
  }
  {
    // "auto" is the per-layer cost model, the same choice as with the variable unset
    ScopedEnv env("BITMIX_KERNEL_FAMILY", "auto");
    const runtime::Session s(model);
    for (std::size_t i = 0; i < model.ops().size(); ++i) {
      const runtime::Op& op = model.ops()[i];
      if (op.kind != runtime::OpKind::conv2d || s.runs_as_float_gemm(i)) continue;
      const int a = model.values()[static_cast<std::size_t>(op.inputs[0])].quant.bits;
      EXPECT_EQ(s.kernel_family(i), kernels::choose_kernel_family(op.conv().weights.spec(), a)) << op.name;
    }
  }
  {
    ScopedEnv env("BITMIX_KERNEL_FAMILY", "fastest");
    try {
      runtime::Session s(model);
      ADD_FAILURE() << "no error";
    } catch (const ArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("BITMIX_KERNEL_FAMILY='fastest'"), std::string::npos) << e.what();
    }
  }
}

TEST(KernelFamilyChoice, CostModelPicksPopcountAtOneBitAndInt8AtEightOnAvx512Vnni) {
  if (!isa_available(Isa::avx512vnni)) GTEST_SKIP() << "avx512vnni not available";
  ScopedIsaCap cap(Isa::avx512vnni);
  const kernels::WeightSpec w1{16, 16, 3, 3, 1, kernels::WeightEncoding::odd_levels, false};
  const kernels::WeightSpec w8{64, 64, 3, 3, 8, kernels::WeightEncoding::twos_complement, false};
  EXPECT_EQ(kernels::choose_kernel_family(w1, 1), KernelFamily::popcount);
  EXPECT_EQ(kernels::choose_kernel_family(w8, 8), KernelFamily::int8);
}

}  // namespace
}  // namespace bitmix::deploy
