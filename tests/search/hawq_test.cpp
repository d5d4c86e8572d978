// HAWQ-style sensitivities: central-difference Hessian-vector products against the Hessian
// built coordinate by coordinate, Hutchinson traces against its exact per-layer traces within a
// stated statistical tolerance, the stopping rule, and Ω.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/ptq.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/search/sensitivity.hpp"
#include "nn/tiny_task.hpp"
#include "search/hessian.hpp"

namespace bitmix::search {
namespace {

const Shape kImage{1, 6, 6};

// conv (stride 2) -> flatten -> linear: smooth in the weights (no ReLU kinks), so finite
// differences of gradients give its Hessian to high accuracy.
std::unique_ptr<nn::Module> smooth_model() {
  Rng rng(8);
  auto m = std::make_unique<nn::Sequential>();
  m->append("conv1", std::make_unique<nn::Conv2d>(nn::Conv2dOptions::square(1, 3, 3, 2, 1), rng));
  m->append("flatten", std::make_unique<nn::Flatten>());
  m->append("fc", std::make_unique<nn::Linear>(27, 4, true, rng));
  return m;
}

LabelledBatches data(uint64_t seed) {
  Rng rng(seed);
  LabelledBatches d;
  for (int b = 0; b < 2; ++b) {
    Tensor t({8, 1, 6, 6});
    for (float& v : t.values()) v = rng.normal();
    std::vector<int> labels;
    for (int i = 0; i < 8; ++i) labels.push_back(static_cast<int>(rng.below(4)));
    d.images.push_back(std::move(t));
    d.labels.push_back(std::move(labels));
  }
  return d;
}

std::vector<Parameter*> weights(nn::Module& m) {
  std::vector<Parameter*> out;
  for (const nn::LayerInfo& l : m.quantizable_layers(kImage))
    out.push_back(l.conv != nullptr ? &l.conv->weight() : &l.linear->weight());
  return out;
}

double step(const std::vector<Parameter*>& params, double epsilon) {
  double s = 0;
  int64_t n = 0;
  for (Parameter* p : params)
    for (float v : p->value.values()) s += static_cast<double>(v) * static_cast<double>(v), ++n;
  return epsilon * std::sqrt(s / static_cast<double>(n));
}

struct Hessian {
  int64_t n = 0;
  std::vector<double> h;  // n x n, column k = H e_k
  double at(int64_t r, int64_t c) const { return h[static_cast<std::size_t>(r * n + c)]; }
};

Hessian coordinate_hessian(nn::Module& m, const std::vector<Parameter*>& params, const LabelledBatches& d, double h) {
  Hessian H;
  for (Parameter* p : params) H.n += p->value.numel();
  H.h.assign(static_cast<std::size_t>(H.n * H.n), 0.0);
  std::vector<double> e(static_cast<std::size_t>(H.n), 0.0);
  for (int64_t k = 0; k < H.n; ++k) {
    e[static_cast<std::size_t>(k)] = 1;
    const std::vector<double> col = detail::hessian_vector_product(m, params, d, e, h);
    e[static_cast<std::size_t>(k)] = 0;
    for (int64_t r = 0; r < H.n; ++r) H.h[static_cast<std::size_t>(r * H.n + k)] = col[static_cast<std::size_t>(r)];
  }
  return H;
}

TEST(Hawq, CentralDifferenceProductsMatchTheCoordinateHessian) {
  auto m = smooth_model();
  const auto params = weights(*m);
  const LabelledBatches d = data(1);
  const double h = step(params, 1e-3);
  const Hessian H = coordinate_hessian(*m, params, d, h);
  double max_entry = 0, asym = 0;
  for (int64_t r = 0; r < H.n; ++r)
    for (int64_t c = 0; c < H.n; ++c) {
      max_entry = std::max(max_entry, std::abs(H.at(r, c)));
      asym = std::max(asym, std::abs(H.at(r, c) - H.at(c, r)));
    }
  std::printf("[ hessian  ] %lld weights, max |H| %.3g, max |H - H^T| %.3g\n", static_cast<long long>(H.n), max_entry, asym);
  EXPECT_LT(asym, 1e-3 * max_entry);
  Rng rng(2);
  for (int t = 0; t < 3; ++t) {
    std::vector<double> v(static_cast<std::size_t>(H.n));
    for (double& x : v) x = rng.bernoulli(0.5f) ? 1.0 : -1.0;
    const std::vector<double> hv = detail::hessian_vector_product(*m, params, d, v, h);
    double err = 0, norm = 0;
    for (int64_t r = 0; r < H.n; ++r) {
      double exact = 0;
      for (int64_t c = 0; c < H.n; ++c) exact += H.at(r, c) * v[static_cast<std::size_t>(c)];
      err += (hv[static_cast<std::size_t>(r)] - exact) * (hv[static_cast<std::size_t>(r)] - exact);
      norm += exact * exact;
    }
    std::printf("[ hessian  ] probe %d: ||Hv (one product) - Hv (coordinates)|| / ||Hv|| = %.3g\n", t, std::sqrt(err / norm));
    EXPECT_LT(std::sqrt(err / norm), 1e-3);
  }
}

// Tolerance: layer i's estimate v_i^T (Hv)_i has variance 2 Σ_{a≠b in i} H_ab² + Σ_{a in i, c
// not in i} H_ac² per probe (Rademacher v), so the mean of N probes lies within 4 standard
// errors of Tr(H_ii) except with probability < 1e-4; plus 1e-3 relative for the differences.
TEST(Hawq, HutchinsonTracesMatchTheExactPerLayerTraces) {
  auto m = smooth_model();
  const auto params = weights(*m);
  const LabelledBatches d = data(3);
  std::vector<LayerOptions> layers{{"conv1", {{2, 8}, {4, 8}}}, {"fc", {{2, 8}, {4, 8}}}};
  HawqOptions options;
  options.max_iterations = 300;
  options.tolerance = 0;
  const HawqSensitivity s = hawq_sensitivity(*m, kImage, layers, d, options);
  EXPECT_EQ(s.iterations, 300);
  EXPECT_FALSE(s.converged);
  const Hessian H = coordinate_hessian(*m, params, d, step(params, options.epsilon));
  int64_t begin = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const int64_t end = begin + params[i]->value.numel();
    double trace = 0, var = 0;
    for (int64_t a = begin; a < end; ++a) {
      trace += H.at(a, a);
      for (int64_t c = 0; c < H.n; ++c) {
        if (c == a) continue;
        const double x = 0.5 * (H.at(a, c) + H.at(c, a));
        // In-layer: Var(v^T A v) = 2 Σ_{a≠c} A_ac² over ordered pairs; across layers: Σ B_ac².
        var += (c >= begin && c < end) ? 2 * x * x : x * x;
      }
    }
    const double sigma = std::sqrt(var / options.max_iterations);
    std::printf("[ hutchinson] %s: estimate %.6g, exact %.6g, standard error %.3g\n", layers[i].name.c_str(),
                s.layers[i].trace, trace, sigma);
    EXPECT_NEAR(s.layers[i].trace, trace, 4 * sigma + 1e-3 * std::abs(trace)) << layers[i].name;
    begin = end;
  }
}

TEST(Hawq, StopsAtTheRelativeChangeAndRestoresTheWeights) {
  auto m = smooth_model();
  const auto params = weights(*m);
  std::vector<Tensor> before;
  for (Parameter* p : params) before.push_back(p->value);
  const LabelledBatches d = data(4);
  std::vector<LayerOptions> layers{{"conv1", {{2, 8}, {3, 8}, {8, 8}}}, {"fc", {{2, 8}, {8, 8}}}};
  HawqOptions options;  // 1e-3, at most 100 probes
  options.tolerance = 2e-2;
  const HawqSensitivity s = hawq_sensitivity(*m, kImage, layers, d, options);
  for (std::size_t i = 0; i < params.size(); ++i) EXPECT_EQ(params[i]->value.values()[0], before[i].values()[0]);
  for (std::size_t i = 0; i < params.size(); ++i)
    for (int64_t k = 0; k < before[i].numel(); ++k) ASSERT_EQ(params[i]->value[k], before[i][k]);
  ASSERT_TRUE(s.converged);
  ASSERT_GT(s.iterations, 1);
  // The same probes, stopped one earlier and at the same place without a tolerance.
  HawqOptions fixed = options;
  fixed.tolerance = 0;
  fixed.max_iterations = s.iterations - 1;
  const HawqSensitivity earlier = hawq_sensitivity(*m, kImage, layers, d, fixed);
  fixed.max_iterations = s.iterations;
  const HawqSensitivity same = hawq_sensitivity(*m, kImage, layers, d, fixed);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    EXPECT_EQ(same.layers[i].trace, s.layers[i].trace);
    EXPECT_LE(std::abs(s.layers[i].trace - earlier.layers[i].trace),
              options.tolerance * (std::abs(earlier.layers[i].trace) + 1e-12));
  }
  // Ω = Tr / n * ||W - Q_b(W)||², with PTQ's weight quantizer.
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const Tensor& w = params[i]->value;
    ASSERT_EQ(s.layers[i].omega.size(), layers[i].options.size());
    for (std::size_t b = 0; b < layers[i].options.size(); ++b) {
      nn::QuantizerTransform q(quant::weight_spec(quant::QuantizerKind::symmetric, layers[i].options[b].w_bits,
                                                  quant::Granularity::per_channel, w.dim(0)));
      nn::calibrate_weight_quantizer(q, w, options.weights);
      const Tensor qw = q.quantizer().forward(w);
      double e = 0;
      for (int64_t k = 0; k < w.numel(); ++k)
        e += (static_cast<double>(qw[k]) - static_cast<double>(w[k])) * (static_cast<double>(qw[k]) - static_cast<double>(w[k]));
      EXPECT_EQ(s.layers[i].perturbation[b], e);
      EXPECT_DOUBLE_EQ(s.layers[i].omega[b], s.layers[i].trace / static_cast<double>(w.numel()) * e);
    }
    EXPECT_GT(s.layers[i].perturbation.front(), s.layers[i].perturbation.back());  // 2 bits lose more than 8
  }
  const AllocationProblem p = hawq_problem(s, layers, {});
  EXPECT_EQ(p.linear.size(), 5u);
}

TEST(Hawq, RunsOnAResNetWithBatchNormAndRejectsBadOptions) {
  auto m = nn::testing::tiny_resnet8(4);
  const Shape image{1, 8, 8};
  Rng rng(9);
  LabelledBatches d;
  Tensor t({6, 1, 8, 8});
  for (float& v : t.values()) v = rng.normal();
  d.images.push_back(t);
  d.labels.push_back({0, 1, 2, 0, 1, 2});
  std::vector<LayerOptions> layers;
  for (const std::string& name : nn::quantizable_layer_names(*m, image)) layers.push_back({name, {{2, 8}, {4, 8}}});
  HawqOptions options;
  options.max_iterations = 3;
  const HawqSensitivity s = hawq_sensitivity(*m, image, layers, d, options);
  EXPECT_EQ(s.layers.size(), layers.size());
  for (const HawqLayer& l : s.layers) EXPECT_TRUE(std::isfinite(l.trace)) << l.name;
  options.max_iterations = 0;
  EXPECT_THROW(hawq_sensitivity(*m, image, layers, d, options), ArgumentError);
  layers.pop_back();
  EXPECT_THROW(hawq_sensitivity(*m, image, layers, d, {}), ArgumentError);
}

}  // namespace
}  // namespace bitmix::search
