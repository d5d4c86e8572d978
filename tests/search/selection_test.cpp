#include "bitmix/search/selection.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"

namespace bitmix::search {
namespace {

std::vector<LayerInfo> layers_with_pins() {
  std::vector<LayerInfo> layers = {{"conv1", 400, 27, true, 8, 8}};
  for (int i = 0; i < 6; ++i)
    layers.push_back({"conv" + std::to_string(i + 2), 1000 * (i % 3 + 1), 100 * (i + 1), false, 8, 8});
  layers.push_back({"fc", 50, 640, true, 8, 8});
  return layers;
}

std::vector<LayerProbabilities> peaked_at(const std::vector<LayerInfo>& layers, const Candidates& c, std::size_t wi,
                                          std::size_t ai, uint64_t seed) {
  Rng rng(seed);
  std::vector<LayerProbabilities> result(layers.size());
  for (std::size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].pinned) continue;
    auto make = [&](std::size_t n, std::size_t peak) {
      std::vector<double> p(n);
      double sum = 0;
      for (std::size_t i = 0; i < n; ++i) sum += p[i] = (i == peak ? 2.0 : 0.1) + 0.5 * rng.uniform_double();
      for (double& v : p) v /= sum;
      return p;
    };
    result[l] = {make(c.w_bits.size(), wi), make(c.a_bits.size(), ai)};
  }
  return result;
}

TEST(Selection, ArgmaxWhenWithinBudget) {
  const auto layers = layers_with_pins();
  const Candidates c{{2, 3, 4, 5}, {2, 3, 4, 5}};
  const CostModel model(CostKind::bitops, layers);
  const auto probs = peaked_at(layers, c, 1, 2, 1);  // W3A4 everywhere
  const Selection s = select_bits(model, c, probs, model.uniform(8, 8), {.fill = false});
  EXPECT_EQ(s.lowered, 0);
  for (std::size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].pinned) {
      EXPECT_EQ(s.bits[l], (LayerBits{8, 8}));
    } else {
      EXPECT_EQ(s.bits[l], (LayerBits{3, 4})) << layers[l].name;
    }
  }
  EXPECT_DOUBLE_EQ(s.cost, model.uniform(3, 4));
}

TEST(Selection, RepairMeetsTheBudgetAndFillLandsOnIt) {
  const auto layers = layers_with_pins();
  const Candidates c{{2, 3, 4, 5}, {2, 3, 4, 5}};
  for (CostKind kind : {CostKind::bitops, CostKind::size}) {
    const CostModel model(kind, layers);
    for (uint64_t seed = 0; seed < 20; ++seed) {
      const auto probs = peaked_at(layers, c, 3, 3, seed);  // argmax W5A5 overshoots
      const double budget = model.uniform(3, 3);
      const Selection s = select_bits(model, c, probs, budget);
      EXPECT_GT(s.argmax_cost, budget);
      EXPECT_GT(s.lowered, 0);
      EXPECT_LE(s.cost, budget);
      EXPECT_DOUBLE_EQ(s.cost, model.total(s.bits));
      // Filled: no single further raise fits in the budget.
      for (std::size_t l = 0; l < layers.size(); ++l) {
        if (layers[l].pinned) continue;
        for (bool weights : {true, false}) {
          std::vector<LayerBits> raised = s.bits;
          int& b = weights ? raised[l].w_bits : raised[l].a_bits;
          if (b == 5) continue;
          b += 1;
          EXPECT_GT(model.total(raised), budget) << "a raise of " << layers[l].name << " still fits";
        }
      }
    }
  }
}

TEST(Selection, TighterBudgetNeverSelectsMoreBits) {
  const auto layers = layers_with_pins();
  const Candidates c{{1, 2, 3, 4, 8}, {2, 4, 8}};
  const CostModel model(CostKind::bitops, layers);
  const auto probs = peaked_at(layers, c, 4, 2, 7);
  double previous_cost = 1e300;
  for (int b : {8, 6, 4, 3, 2}) {
    const Selection s = select_bits(model, c, probs, model.uniform(b, b));
    EXPECT_LE(s.cost, model.uniform(b, b));
    EXPECT_LE(s.cost, previous_cost);
    previous_cost = s.cost;
  }
}

TEST(Selection, RepairPrefersLayersWhoseStrengthsObjectLeast) {
  // Two equal layers; layer A is nearly indifferent between 4 and 2 bits, layer B strongly
  // prefers 4. A budget that forces one step down must take it from A.
  const std::vector<LayerInfo> layers = {{"a", 100, 10, false, 8, 8}, {"b", 100, 10, false, 8, 8}};
  const Candidates c{{2, 4}, {8}};
  const CostModel model(CostKind::bitops, layers);
  const std::vector<LayerProbabilities> probs = {{{0.45, 0.55}, {1.0}}, {{0.01, 0.99}, {1.0}}};
  const Selection s = select_bits(model, c, probs, 100 * 8 * 6.0, {.fill = false});
  EXPECT_EQ(s.bits[0].w_bits, 2);
  EXPECT_EQ(s.bits[1].w_bits, 4);
}

TEST(Selection, ImpossibleBudgetIsAnError) {
  const auto layers = layers_with_pins();
  const Candidates c{{2, 4}, {2, 4}};
  const CostModel model(CostKind::bitops, layers);
  const auto probs = peaked_at(layers, c, 1, 1, 3);
  EXPECT_THROW(select_bits(model, c, probs, model.uniform(2, 2) * 0.99), ArgumentError);
  EXPECT_NO_THROW(select_bits(model, c, probs, model.uniform(2, 2)));
}

TEST(Selection, ValidatesCandidatesAndShapes) {
  EXPECT_THROW(validate_candidates({{}, {2}}), ArgumentError);
  EXPECT_THROW(validate_candidates({{0, 2}, {2}}), ArgumentError);
  EXPECT_THROW(validate_candidates({{2, 9}, {2}}), ArgumentError);
  EXPECT_THROW(validate_candidates({{3, 2}, {2}}), ArgumentError);
  EXPECT_THROW(validate_candidates({{2, 2}, {2}}), ArgumentError);
  EXPECT_NO_THROW(validate_candidates({{1, 8}, {2, 3}}));
  const auto layers = layers_with_pins();
  const CostModel model(CostKind::bitops, layers);
  const Candidates c{{2, 4}, {2, 4}};
  auto probs = peaked_at(layers, c, 0, 0, 1);
  probs[2].w.push_back(0.0);
  EXPECT_THROW(select_bits(model, c, probs, 1e12), ArgumentError);
  probs.pop_back();
  EXPECT_THROW(expected_cost(model, c, probs), ArgumentError);
}

}  // namespace
}  // namespace bitmix::search
