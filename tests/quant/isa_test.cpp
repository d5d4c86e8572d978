// Every compiled ISA path of the elementwise quantizer kernels against the baseline path, bit for
// bit, for every valid quantizer spec: forward, forward_accumulate, dot_output, backward (store
// and accumulate), the parameter gradients, and the fused mix_forward / mix_backward.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "bitmix/core/cpu.hpp"
#include "bitmix/quant/mixing.hpp"
#include "quant_test_util.hpp"

namespace bitmix::quant {
namespace {

using testing::gaussian;

struct Results {
  std::vector<Tensor> tensors;
  std::vector<double> doubles;
};

// Inputs: a Gaussian tensor (the quantizers' state is initialized on it) and the same tensor
// with zeros of both signs, infinities, NaN, denormals and large values sprinkled in.
Tensor with_special_values(Tensor x) {
  const float specials[] = {0.0f,   -0.0f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            NAN,    1e-40f, -1e-40f, 1e30f, -1e30f, 0.5f, -0.5f, 2.5f};
  for (int64_t i = 0, k = 0; i < x.numel(); i += 13, ++k) x[i] = specials[k % 12];
  return x;
}

void perturb(Quantizer& q, float factor) {
  for (Parameter* p : q.parameters())
    for (int64_t i = 0; i < p->value.numel(); ++i) p->value[i] *= factor;
}

Results run(const QuantizerSpec& spec, const Tensor& init, const Tensor& x, const Tensor& g) {
  Results r;
  Quantizer q(spec);
  q.forward(init);
  r.tensors.push_back(q.forward(x));
  Tensor acc = Tensor::full(x.shape(), 1.0f);
  q.forward_accumulate(x, 0.375f, acc);
  r.tensors.push_back(acc);
  r.doubles.push_back(q.dot_output(x, g));
  r.tensors.push_back(q.backward(x, g));
  Tensor gx = Tensor::full(x.shape(), 0.5f);
  q.backward_accumulate(x, g, 0.625f, gx);
  r.tensors.push_back(gx);
  for (Parameter* p : q.parameters()) r.tensors.push_back(p->grad);

  // Three quantizers of the spec with different learned values, mixed.
  std::vector<std::unique_ptr<Quantizer>> owned;
  std::vector<Quantizer*> set;
  for (float factor : {1.0f, 0.75f, 1.5f}) {
    owned.push_back(std::make_unique<Quantizer>(spec));
    owned.back()->forward(init);
    perturb(*owned.back(), factor);
    set.push_back(owned.back().get());
  }
  const std::vector<float> w = {0.2f, 0.3f, 0.5f};
  Tensor y, mix_gx;
  mix_forward(set, w, x, y);
  std::vector<double> dw(3);
  mix_backward(set, w, x, g, mix_gx, dw);
  r.tensors.push_back(y);
  r.tensors.push_back(mix_gx);
  for (double d : dw) r.doubles.push_back(d);
  for (Quantizer* m : set)
    for (Parameter* p : m->parameters()) r.tensors.push_back(p->grad);
  return r;
}

bool same(float a, float b) { return testing::bitwise_equal(a, b) || (std::isnan(a) && std::isnan(b)); }
bool same(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)) ; }

void expect_same(const Results& a, const Results& b, const std::string& what) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size()) << what;
  for (std::size_t t = 0; t < a.tensors.size(); ++t) {
    ASSERT_EQ(a.tensors[t].shape(), b.tensors[t].shape()) << what << " result " << t;
    int64_t mismatches = 0;
    for (int64_t i = 0; i < a.tensors[t].numel(); ++i)
      if (!same(a.tensors[t][i], b.tensors[t][i]) && mismatches++ < 3)
        ADD_FAILURE() << what << " result " << t << " element " << i << ": " << a.tensors[t][i] << " vs "
                      << b.tensors[t][i];
    EXPECT_EQ(mismatches, 0) << what << " result " << t;
  }
  for (std::size_t d = 0; d < a.doubles.size(); ++d)
    EXPECT_TRUE(same(a.doubles[d], b.doubles[d])) << what << " sum " << d << ": " << a.doubles[d] << " vs "
                                                  << b.doubles[d];
}

TEST(QuantizerIsa, EveryPathEqualsTheBaselineBitForBit) {
  const std::span<const Isa> isas = available_isas();
  if (isas.size() < 2) GTEST_SKIP() << "only the baseline path is available: " << cpu_summary();
  // 210 values: partial lane groups per channel; 18006 values: several chunks per group and
  // two blocks per tensor.
  for (const Shape& shape : {Shape{6, 5, 7}, Shape{6, 3001}}) {
    const Tensor init = gaussian(shape, 1, 0.7f);
    const Tensor normal = gaussian(shape, 2, 0.7f);
    const Tensor special = with_special_values(normal);
    const Tensor g = gaussian(shape, 3);
    for (QuantizerSpec spec : testing::all_valid_specs(6)) {
      if (spec.kind == QuantizerKind::dsconv) spec.block_size = shape[1];  // blocks must divide axis 1
      for (const Tensor* x : {&normal, &special}) {
        Results baseline;
        {
          ScopedIsaCap cap(Isa::scalar);
          baseline = run(spec, init, *x, g);
        }
        for (Isa isa : isas) {
          if (isa == Isa::scalar) continue;
          ScopedIsaCap cap(isa);
          ASSERT_EQ(active_isa(), isa);
          expect_same(run(spec, init, *x, g), baseline,
                      std::string(isa_name(isa)) + " " + describe(spec) + (x == &special ? " special values" : "") +
                          " " + shape_to_string(shape));
          if (::testing::Test::HasFailure()) return;
        }
      }
    }
  }
}

}  // namespace
}  // namespace bitmix::quant
