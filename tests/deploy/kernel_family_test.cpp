// Whole models give bit-identical logits whichever kernel family runs their layers: ResNet-20
// at uniform and mixed bitwidths, each family forced on every layer (SessionOptions and
// BITMIX_KERNEL_FAMILY) against the per-layer automatic choice, on every ISA path here.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/kernels/lut.hpp"
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

// Forcing a family must really reach every convolution that does not run as a float GEMM; a
// layer lut does not take (weights or activations over 4 bits, or past its int16 bound) gets the
// automatic choice instead. Returns how many layers run the forced family.
int expect_family_everywhere(const runtime::Session& s, KernelFamily family) {
  const auto& ops = s.model().ops();
  int forced = 0;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind != runtime::OpKind::conv2d && ops[i].kind != runtime::OpKind::linear) {
      EXPECT_EQ(s.kernel_family(i), KernelFamily::automatic);
      continue;
    }
    if (s.runs_as_float_gemm(i)) continue;
    const kernels::WeightSpec& spec = ops[i].conv().weights.spec();
    const int a = s.model().values()[static_cast<std::size_t>(ops[i].inputs[0])].quant.bits;
    const bool takes = family != KernelFamily::lut || kernels::lut_supported(spec, a);
    EXPECT_EQ(s.kernel_family(i), takes ? family : kernels::choose_kernel_family(spec, a)) << ops[i].name;
    forced += takes ? 1 : 0;
  }
  return forced;
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
    for (KernelFamily family :
         {KernelFamily::automatic, KernelFamily::popcount, KernelFamily::int8, KernelFamily::lut}) {
      runtime::SessionOptions o;
      o.kernel_family = family;
      runtime::Session session(model, o);
      if (family != KernelFamily::automatic) {
        const int forced = expect_family_everywhere(session, family);
        // lut must run somewhere (all of W1A1 / W2A2, some of mixed / W4A4) and nowhere on W8A8
        if (family == KernelFamily::lut) {
          EXPECT_EQ(forced > 0, fc.w <= 4 && fc.a <= 4) << fc.name;
        }
      }
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
    ScopedEnv env("BITMIX_KERNEL_FAMILY", "lut");
    EXPECT_GT(expect_family_everywhere(runtime::Session(model), KernelFamily::lut), 0);
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
  // the table-lookup kernels lose to the AVX-512 popcount kernels: never chosen on this path
  for (int bits = 1; bits <= 4; ++bits) {
    const kernels::WeightSpec w{16, 16, 3, 3, bits, kernels::WeightEncoding::twos_complement, false};
    EXPECT_NE(kernels::choose_kernel_family(w, bits), KernelFamily::lut) << bits;
  }
}

TEST(KernelFamilyChoice, CostModelPicksLutForNarrowLayersOnlyOnAvx2) {
  if (!isa_available(Isa::avx2)) GTEST_SKIP() << "avx2 not available";
  ScopedIsaCap cap(Isa::avx2);
  const kernels::WeightSpec w2{16, 16, 3, 3, 2, kernels::WeightEncoding::twos_complement, false};
  const kernels::WeightSpec w8{64, 64, 3, 3, 8, kernels::WeightEncoding::twos_complement, false};
  const kernels::WeightSpec dw{16, 16, 3, 3, 2, kernels::WeightEncoding::twos_complement, true};
  EXPECT_EQ(kernels::choose_kernel_family(w2, 2), KernelFamily::lut);
  EXPECT_NE(kernels::choose_kernel_family(w8, 8), KernelFamily::lut);  // lut does not take 8 bits
  EXPECT_EQ(kernels::choose_kernel_family(dw, 2), KernelFamily::popcount);
  // past the int16 bound of the byte sums lut is not a candidate however cheap it would be
  const kernels::WeightSpec wide{64, 512, 3, 3, 4, kernels::WeightEncoding::twos_complement, false};
  ASSERT_FALSE(kernels::lut_supported(wide, 4));
  EXPECT_NE(kernels::choose_kernel_family(wide, 4), KernelFamily::lut);
}

TEST(KernelFamilyChoice, ForcedLutOnPackedWeightsMatchesTheOtherFamilies) {
  // kernels::conv2d on packed weights with family lut (tables built for the call) and its
  // fallback on a layer lut does not take, against popcount, on every path
  Rng rng(13);
  for (Isa isa : available_isas()) {
    ScopedIsaCap cap(isa);
    for (int bits : {2, 6}) {
      const kernels::WeightSpec spec{24, 20, 3, 3, bits, kernels::WeightEncoding::twos_complement, false};
      std::vector<int32_t> codes(static_cast<std::size_t>(spec.code_count()));
      const int lo = -(1 << (bits - 1)), span = 1 << bits;
      for (int32_t& c : codes) c = lo + static_cast<int32_t>(rng.below(static_cast<uint64_t>(span)));
      const kernels::PackedWeights weights = kernels::PackedWeights::pack(codes, spec);
      std::vector<uint8_t> act(static_cast<std::size_t>(2 * 20 * 7 * 6));
      for (uint8_t& c : act) c = static_cast<uint8_t>(rng.below(8));
      const kernels::PackedActivations input =
          kernels::PackedActivations::from_codes(act, 2, 20, 7, 6, kernels::ActivationQuant{3, 0.5f, 2}, 1);
      const kernels::Epilogue ep = kernels::Epilogue::identity(24);
      kernels::Conv2dParams p{1, 1, 1, 1, KernelFamily::popcount};
      const Tensor expected = kernels::conv2d(input, weights, p, ep);
      p.family = KernelFamily::lut;
      const Tensor got = kernels::conv2d(input, weights, p, ep);
      ASSERT_EQ(got.shape(), expected.shape());
      EXPECT_TRUE(testing::same_bits(got.data(), expected.data(), got.numel())) << isa_name(isa) << " W" << bits;
    }
  }
}

}  // namespace
}  // namespace bitmix::deploy
