// CLADO's measurement against direct evaluation of post-training-quantized models, its
// thread-count independence, the cache (resume and reuse give identical numbers), the matrix C,
// and allocations that respect their budgets.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/ptq.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/search/sensitivity.hpp"
#include "nn/tiny_task.hpp"
#include "search/clado_internal.hpp"

namespace bitmix::search {
namespace {

const Shape kImage{1, 8, 8};

LabelledBatches random_data(uint64_t seed, int batches, int batch) {
  Rng rng(seed);
  LabelledBatches d;
  for (int b = 0; b < batches; ++b) {
    Tensor t({batch, 1, 8, 8});
    for (float& v : t.values()) v = rng.normal();
    std::vector<int> labels;
    for (int i = 0; i < batch; ++i) labels.push_back(static_cast<int>(rng.below(3)));
    d.images.push_back(std::move(t));
    d.labels.push_back(std::move(labels));
  }
  return d;
}

std::unique_ptr<nn::Module> tiny() { return nn::testing::tiny_resnet8(21); }

std::vector<LayerOptions> tiny_options() {
  std::vector<LayerOptions> out;
  for (const std::string& name : nn::quantizable_layer_names(*tiny(), kImage))
    out.push_back({name, {{2, 8}, {4, 6}}});
  return out;
}

double mean_loss(nn::Module& model, const LabelledBatches& data) {
  model.eval();
  double total = 0;
  for (std::size_t b = 0; b < data.images.size(); ++b)
    total += nn::softmax_cross_entropy(model.forward(data.images[b]), data.labels[b], 0.0f, nullptr).loss *
             static_cast<double>(data.labels[b].size());
  return total / static_cast<double>(data.count());
}

// The loss with the given layers quantized by PTQ (every other layer float), directly.
double direct_loss(const std::vector<std::pair<int, LayerBits>>& quantized, const std::vector<Tensor>& calibration,
                   const LabelledBatches& data) {
  auto model = tiny();
  const std::vector<std::string> names = nn::quantizable_layer_names(*model, kImage);
  quant::BitConfig config;
  config.model = "resnet8";
  config.policy = quant::BitPolicy::none();
  for (const std::string& name : names) {
    quant::LayerBits entry;
    entry.name = name;
    entry.w_bits = entry.a_bits = quant::kFloatBits;
    entry.w_quant = entry.a_quant = quant::QuantizerKind::float_bypass;
    config.layers.push_back(entry);
  }
  for (const auto& [layer, bits] : quantized) {
    quant::LayerBits& entry = config.layers[static_cast<std::size_t>(layer)];
    entry.w_bits = bits.w_bits;
    entry.a_bits = bits.a_bits;
    entry.w_quant = quant::QuantizerKind::symmetric;
    entry.a_quant = quant::QuantizerKind::uniform;
  }
  nn::quantize_post_training(*model, kImage, config, calibration);
  return mean_loss(*model, data);
}

class CladoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sensitivity_ = random_data(1, 2, 6);
    calibration_ = random_data(2, 1, 8).images;
    layers_ = tiny_options();
  }
  CladoMeasurement measure(const CladoOptions& options = {}) {
    return measure_clado(tiny, kImage, layers_, sensitivity_, calibration_, options);
  }
  LabelledBatches sensitivity_;
  std::vector<Tensor> calibration_;
  std::vector<LayerOptions> layers_;
};

TEST_F(CladoTest, MatchesDirectEvaluationOfPostTrainingQuantizedModels) {
  const CladoMeasurement m = measure();
  const int L = static_cast<int>(layers_.size());
  ASSERT_GE(L, 4);
  EXPECT_EQ(m.evaluations, 1 + 2 * L + 4 * L * (L - 1) / 2);
  auto base = tiny();
  EXPECT_DOUBLE_EQ(m.base_loss, mean_loss(*base, sensitivity_));
  const double base_loss = m.base_loss;
  // The first layer (signed input grid), a middle one and the last, alone and in pairs.
  for (int i : {0, L / 2, L - 1})
    for (int b = 0; b < 2; ++b) {
      const double direct = direct_loss({{i, layers_[static_cast<std::size_t>(i)].options[static_cast<std::size_t>(b)]}}, calibration_, sensitivity_) - base_loss;
      EXPECT_NEAR(m.single[static_cast<std::size_t>(2 * i + b)], direct, 1e-12) << layers_[static_cast<std::size_t>(i)].name << " option " << b;
    }
  const int64_t n = m.size();
  for (auto [i, j] : {std::pair{0, L - 1}, std::pair{1, 2}})
    for (int b = 0; b < 2; ++b)
      for (int c = 0; c < 2; ++c) {
        const double direct = direct_loss({{i, layers_[static_cast<std::size_t>(i)].options[static_cast<std::size_t>(b)]},
                                           {j, layers_[static_cast<std::size_t>(j)].options[static_cast<std::size_t>(c)]}},
                                          calibration_, sensitivity_) -
                              base_loss;
        EXPECT_NEAR(m.pair[static_cast<std::size_t>((2 * i + b) * n + 2 * j + c)], direct, 1e-12) << i << "," << j;
        EXPECT_EQ(m.pair[static_cast<std::size_t>((2 * i + b) * n + 2 * j + c)], m.pair[static_cast<std::size_t>((2 * j + c) * n + 2 * i + b)]);
      }
  // 2-bit weights hurt more than 4-bit ones somewhere: the measurement sees quantization.
  double sum2 = 0, sum4 = 0;
  for (int i = 0; i < L; ++i) sum2 += m.single[static_cast<std::size_t>(2 * i)], sum4 += m.single[static_cast<std::size_t>(2 * i + 1)];
  EXPECT_NE(sum2, sum4);
}

TEST_F(CladoTest, MatrixAndPredictionsFollowTheDefinitions) {
  const CladoMeasurement m = measure();
  const std::vector<double> c = m.clado_matrix();
  const int64_t n = m.size();
  const int L = static_cast<int>(layers_.size());
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_EQ(c[static_cast<std::size_t>(r * n + r)], 2 * m.single[static_cast<std::size_t>(r)]);
    if (r % 2 == 0) {
      EXPECT_EQ(c[static_cast<std::size_t>(r * n + r + 1)], 0.0);  // two options of one layer
    }
  }
  EXPECT_EQ(c[static_cast<std::size_t>(0 * n + 3)], m.pair[3] - m.single[0] - m.single[3]);
  Rng rng(5);
  for (int t = 0; t < 5; ++t) {
    std::vector<int> choice;
    for (int i = 0; i < L; ++i) choice.push_back(static_cast<int>(rng.below(2)));
    double independent = 0, cross = 0;
    for (int i = 0; i < L; ++i) {
      const int64_t r = 2 * i + choice[static_cast<std::size_t>(i)];
      independent += m.single[static_cast<std::size_t>(r)];
      for (int j = i + 1; j < L; ++j) {
        const int64_t s = 2 * j + choice[static_cast<std::size_t>(j)];
        cross += m.pair[static_cast<std::size_t>(r * n + s)] - m.single[static_cast<std::size_t>(r)] - m.single[static_cast<std::size_t>(s)];
      }
    }
    EXPECT_NEAR(m.predicted_independent(choice), independent, 1e-15);
    EXPECT_NEAR(m.predicted_clado(choice), independent + cross, 1e-12);
    // The unprojected problem's objective is the prediction itself.
    EXPECT_NEAR(clado_problem(m, {}, false).objective(choice), m.predicted_clado(choice), 1e-12);
    EXPECT_NEAR(independent_problem(m, {}).objective(choice), independent, 1e-15);
  }
  CladoOptions singles;
  singles.pairs = false;
  const CladoMeasurement s = measure(singles);
  EXPECT_EQ(s.single, m.single);
  EXPECT_THROW(s.clado_matrix(), ArgumentError);
}

TEST_F(CladoTest, SameNumbersOnOneThreadAndTwo) {
  const int saved = num_threads();
  set_num_threads(1);
  const CladoMeasurement one = measure();
  set_num_threads(2);
  const CladoMeasurement two = measure();
  set_num_threads(saved);
  EXPECT_EQ(one.single, two.single);
  EXPECT_EQ(one.pair, two.pair);
  EXPECT_EQ(one.base_loss, two.base_loss);
}

TEST_F(CladoTest, InterruptedMeasurementResumesFromTheCacheWithIdenticalResults) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "bitmix_clado_cache_test";
  std::filesystem::remove_all(dir);
  const std::filesystem::path cache = dir / "clado.cache";
  const CladoMeasurement reference = measure();

  CladoOptions interrupted;
  interrupted.cache = cache;
  struct Stop {};
  interrupted.progress = [](int64_t done, int64_t) {
    if (done >= 32) throw Stop{};
  };
  EXPECT_THROW(measure(interrupted), Stop);
  ASSERT_TRUE(std::filesystem::exists(cache));

  CladoOptions resume;
  resume.cache = cache;
  const CladoMeasurement resumed = measure(resume);
  EXPECT_GE(resumed.from_cache, 32);
  EXPECT_LT(resumed.from_cache, resumed.evaluations);
  EXPECT_EQ(resumed.single, reference.single);
  EXPECT_EQ(resumed.pair, reference.pair);
  EXPECT_EQ(resumed.base_loss, reference.base_loss);

  // A second budget's run measures nothing.
  const CladoMeasurement reused = measure(resume);
  EXPECT_EQ(reused.from_cache, reused.evaluations);
  EXPECT_EQ(reused.pair, reference.pair);

  // The independent allocator's singles-only run uses the same cache and keeps its pairs.
  CladoOptions singles = resume;
  singles.pairs = false;
  const CladoMeasurement only_singles = measure(singles);
  EXPECT_EQ(only_singles.from_cache, only_singles.evaluations);
  EXPECT_EQ(only_singles.single, reference.single);
  EXPECT_EQ(measure(resume).from_cache, reference.evaluations);

  // Another measurement (other options) refuses this cache, naming it.
  std::vector<LayerOptions> other = layers_;
  other[0].options[0].w_bits = 3;
  try {
    measure_clado(tiny, kImage, other, sensitivity_, calibration_, resume);
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find(cache.string()), std::string::npos) << e.what();
  }
  // A malformed cache is a FormatError naming the file and line.
  {
    std::ofstream out(cache, std::ios::app);
    out << "12 not-a-number\n";
  }
  try {
    measure(resume);
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(cache.string() + ":"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(CladoCache, RoundTripsExactly) {
  const std::filesystem::path path = std::filesystem::temp_directory_path() / "bitmix_clado_roundtrip.cache";
  const std::map<int64_t, double> entries{{0, 1.0 / 3.0}, {7, -2.5e-300}, {12, 0.1}};
  detail::save_clado_cache(path, 0xfeedULL, entries);
  EXPECT_EQ(detail::load_clado_cache(path, 0xfeedULL), entries);
  EXPECT_THROW(detail::load_clado_cache(path, 0xbeefULL), ArgumentError);
  std::filesystem::remove(path);
  EXPECT_TRUE(detail::load_clado_cache(path, 1).empty());
}

TEST_F(CladoTest, AllocationsRespectTheirBudgets) {
  const CladoMeasurement m = measure();
  std::vector<LayerInfo> infos;
  for (const nn::LayerInfo& l : tiny()->quantizable_layers(kImage)) infos.push_back({l.name, l.macs_per_image, l.weight_count});
  const CostModel size(CostKind::size, infos), bitops(CostKind::bitops, infos);
  const auto bits = option_bits(layers_);
  for (double fraction : {0.3, 0.6, 0.9}) {
    const double size_cap = size.uniform(2, 8) + fraction * (size.uniform(4, 6) - size.uniform(2, 8));
    const double bitops_cap = bitops.uniform(2, 8) + (1 - fraction) * (bitops.uniform(4, 6) - bitops.uniform(2, 8));
    const std::vector<AllocationBudget> budgets{allocation_budget(size, bits, size_cap), allocation_budget(bitops, bits, bitops_cap)};
    PsdProjection projection;
    for (const AllocationProblem& p : {clado_problem(m, budgets, true, &projection), independent_problem(m, budgets)}) {
      const AllocationSolution s = solve_allocation(p);
      EXPECT_EQ(s.status, SolveStatus::optimal);
      std::vector<LayerBits> chosen;
      for (std::size_t i = 0; i < layers_.size(); ++i) chosen.push_back(layers_[i].options[static_cast<std::size_t>(s.choice[i])]);
      EXPECT_LE(size.total(chosen), size_cap);
      EXPECT_LE(bitops.total(chosen), bitops_cap);
    }
    EXPECT_GE(projection.relative_removed, 0);
  }
}

TEST(UniformChoice, TakesTheMostBitsThatFitAndKeepsPinnedLayers) {
  const std::vector<LayerOptions> layers{{"first", {{8, 8}}}, {"a", {{2, 8}, {4, 8}, {8, 8}}},
                                         {"b", {{8, 8}, {4, 8}, {2, 8}}}, {"last", {{8, 8}}}};
  // Size cost: 10 per bit on a and b, 80 on the pinned layers.
  auto size_budget = [&](double cap) {
    AllocationBudget b{"size", "bits", {}, cap};
    for (const LayerOptions& l : layers) {
      std::vector<double> row;
      for (const LayerBits& o : l.options) row.push_back(10.0 * o.w_bits);
      b.cost.push_back(row);
    }
    return b;
  };
  EXPECT_EQ(uniform_choice(layers, {size_budget(320)}), (std::vector<int>{0, 2, 0, 0}));  // W8: 80+80+80+80
  EXPECT_EQ(uniform_choice(layers, {size_budget(319)}), (std::vector<int>{0, 1, 1, 0}));  // W4: 240
  EXPECT_EQ(uniform_choice(layers, {size_budget(200)}), (std::vector<int>{0, 0, 2, 0}));  // W2: 200
  try {
    uniform_choice(layers, {size_budget(199)});
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("W2A8, costs size 200 bits"), std::string::npos) << e.what();
  }
  EXPECT_THROW(uniform_choice({{"a", {{2, 8}, {4, 8}}}, {"b", {{3, 8}, {5, 8}}}}, {}), ArgumentError);
}

}  // namespace
}  // namespace bitmix::search
