#include "bitmix/search/cost.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/search/selection.hpp"

namespace bitmix::search {
namespace {

std::vector<LayerInfo> toy_layers() {
  return {{"conv1", 1000, 27, true, 8, 8},
          {"layer1.0.conv1", 5000, 144, false, 8, 8},
          {"layer1.0.conv2", 5000, 144, false, 8, 8},
          {"layer2.0.conv1", 2500, 288, false, 8, 8},
          {"fc", 64, 640, true, 8, 8}};
}

std::vector<LayerProbabilities> random_probabilities(const std::vector<LayerInfo>& layers, const Candidates& c,
                                                     uint64_t seed) {
  Rng rng(seed);
  std::vector<LayerProbabilities> result(layers.size());
  for (std::size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].pinned) continue;
    auto draw = [&](std::size_t n) {
      std::vector<double> p(n);
      double sum = 0;
      for (double& v : p) sum += v = 0.05 + rng.uniform_double();
      for (double& v : p) v /= sum;
      return p;
    };
    result[l] = {draw(c.w_bits.size()), draw(c.a_bits.size())};
  }
  return result;
}

TEST(CostModel, BitopsAndSizeOfUniformConfigs) {
  const auto layers = toy_layers();
  const CostModel bitops(CostKind::bitops, layers);
  EXPECT_DOUBLE_EQ(bitops.uniform(4, 4), 1000 * 64 + 12500 * 16 + 64 * 64);
  const CostModel size(CostKind::size, layers);
  EXPECT_DOUBLE_EQ(size.uniform(2, 8), 27 * 8 + 576 * 2 + 640 * 8);
  EXPECT_THROW(bitops.total({{4, 4}}), ArgumentError);
}

TEST(CostModel, ExpectedBitopsIsMacsTimesExpectedBits) {
  const auto layers = toy_layers();
  const Candidates c{{2, 3, 4, 5}, {2, 3, 4, 5}};
  const auto probs = random_probabilities(layers, c, 1);
  const CostModel model(CostKind::bitops, layers);
  double expected = 1000 * 64 + 64 * 64;
  for (std::size_t l = 1; l <= 3; ++l) {
    double ew = 0, ea = 0;
    for (std::size_t i = 0; i < 4; ++i) ew += probs[l].w[i] * c.w_bits[i], ea += probs[l].a[i] * c.a_bits[i];
    expected += static_cast<double>(layers[l].macs) * ew * ea;
  }
  EXPECT_NEAR(expected_cost(model, c, probs).value, expected, 1e-6 * expected);
}

TEST(CostModel, ExpectedCostGradientMatchesFiniteDifferences) {
  const auto layers = toy_layers();
  const Candidates c{{1, 2, 4}, {2, 3, 4, 8}};
  auto probs = random_probabilities(layers, c, 2);
  LatencyTable table("test", 1, 1);
  Rng rng(3);
  for (const auto& l : layers)
    for (int w = 1; w <= 8; ++w)
      for (int a = 1; a <= 8; ++a) table.set(l.name, w, a, 0.1 + rng.uniform_double());
  for (CostKind kind : {CostKind::bitops, CostKind::size, CostKind::latency}) {
    const CostModel model(kind, layers, &table);
    const ExpectedCost analytic = expected_cost(model, c, probs);
    for (std::size_t l = 1; l <= 3; ++l)
      for (int which = 0; which < 2; ++which) {
        auto& vec = which == 0 ? probs[l].w : probs[l].a;
        const auto& grad = which == 0 ? analytic.gradient[l].w : analytic.gradient[l].a;
        for (std::size_t i = 0; i < vec.size(); ++i) {
          const double h = 1e-6, saved = vec[i];
          vec[i] = saved + h;
          const double up = expected_cost(model, c, probs).value;
          vec[i] = saved - h;
          const double down = expected_cost(model, c, probs).value;
          vec[i] = saved;
          EXPECT_NEAR(grad[i], (up - down) / (2 * h), 1e-4 * std::max(1.0, std::abs(grad[i])))
              << cost_kind_name(kind) << " layer " << l << " " << which << " " << i;
        }
      }
  }
}

TEST(Penalty, ZeroOnBudgetAndGradientMatches) {
  EXPECT_DOUBLE_EQ(budget_penalty(5.0, 5.0, 2.0).value, 0.0);
  EXPECT_DOUBLE_EQ(budget_penalty(5.0, 5.0, 2.0).d_cost, 0.0);
  for (double cost : {1.0, 4.0, 6.0, 40.0}) {
    const Penalty p = budget_penalty(cost, 5.0, 0.7);
    EXPECT_GT(p.value, 0);
    EXPECT_EQ(p.d_cost > 0, cost > 5.0);  // pushes toward the budget from both sides
    const double h = 1e-6 * cost;
    const double fd = (budget_penalty(cost + h, 5.0, 0.7).value - budget_penalty(cost - h, 5.0, 0.7).value) / (2 * h);
    EXPECT_NEAR(p.d_cost, fd, 1e-6);
  }
  // Scale-free: the same relative miss costs the same in any unit.
  EXPECT_NEAR(budget_penalty(2e9, 1e9, 1).value, budget_penalty(2.0, 1.0, 1).value, 1e-12);
}

TEST(Budget, AvgBitsIsUniformBitops) {
  const auto layers = toy_layers();
  const CostModel model(CostKind::bitops, layers);
  for (int b = 1; b <= 8; ++b) {
    const ResolvedBudget r = resolve_budget({Budget::Kind::avg_bits, static_cast<double>(b)}, layers);
    EXPECT_EQ(r.kind, CostKind::bitops);
    EXPECT_DOUBLE_EQ(r.value, model.uniform(b, b));
  }
  EXPECT_DOUBLE_EQ(resolve_budget({Budget::Kind::size_kb, 2}, layers).value, 2 * 1024 * 8);
  EXPECT_DOUBLE_EQ(resolve_budget({Budget::Kind::bitops, 0.5}, layers).value, 0.5e9);
  EXPECT_THROW(resolve_budget({Budget::Kind::avg_bits, 9}, layers), ArgumentError);
  EXPECT_THROW(resolve_budget({Budget::Kind::latency_ms, -1}, layers), ArgumentError);
  EXPECT_THROW(CostModel(CostKind::latency, layers, nullptr), ArgumentError);
}

class LatencyTableFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / "bitmix_latency_table_test";
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path write(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::ofstream(path) << text;
    return path;
  }
  std::filesystem::path dir_;
};

TEST_F(LatencyTableFile, RoundTrips) {
  LatencyTable table("EPYC", 64, 2);
  table.set("conv1", 8, 8, 1.25);
  table.set("layer1.0.conv1", 2, 3, 0.5);
  const auto path = dir_ / "table.json";
  table.save(path);
  const LatencyTable loaded = LatencyTable::load(path);
  EXPECT_EQ(loaded.machine(), "EPYC");
  EXPECT_EQ(loaded.batch(), 64);
  EXPECT_DOUBLE_EQ(loaded.at("layer1.0.conv1", 2, 3), 0.5);
  EXPECT_THROW(loaded.at("layer1.0.conv1", 3, 3), ArgumentError);
  EXPECT_THROW(loaded.at("nope", 2, 3), ArgumentError);
  EXPECT_THROW(loaded.require({{"conv1", 1, 1, false}}, {8}, {4, 8}), ArgumentError);
}

TEST_F(LatencyTableFile, RejectsMalformedFiles) {
  auto expect_format_error = [&](const std::string& text, const std::string& fragment) {
    const auto path = write("bad.json", text);
    try {
      LatencyTable::load(path);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
    }
  };
  expect_format_error("{", "not valid JSON");
  expect_format_error("{\"format\":\"other\"}", "not a bitmix latency table");
  expect_format_error("{\"format\":\"bitmix-latency-table\",\"version\":2}", "version 2");
  expect_format_error("{\"format\":\"bitmix-latency-table\",\"version\":1,\"batch\":1}", "malformed");
  expect_format_error(
      "{\"format\":\"bitmix-latency-table\",\"version\":1,\"batch\":1,\"threads\":1,\"layers\":"
      "[{\"name\":\"a\",\"entries\":[{\"w_bits\":9,\"a_bits\":2,\"ms\":1}]}]}",
      "W9A2");
  expect_format_error(
      "{\"format\":\"bitmix-latency-table\",\"version\":1,\"batch\":1,\"threads\":1,\"layers\":"
      "[{\"name\":\"a\",\"entries\":[{\"w_bits\":2,\"a_bits\":2,\"ms\":-1}]}]}",
      "non-negative");
  expect_format_error("{\"format\":\"bitmix-latency-table\",\"version\":1,\"batch\":0,\"threads\":1,\"layers\":[]}",
                      "batch 0");
  // Strict JSON: a layer's timing given twice, a time beyond a double.
  expect_format_error(
      "{\"format\":\"bitmix-latency-table\",\"version\":1,\"batch\":1,\"threads\":1,\"layers\":"
      "[{\"name\":\"a\",\"entries\":[{\"w_bits\":2,\"a_bits\":2,\"ms\":1,\"ms\":0.5}]}]}",
      "key \"ms\" appears twice in the object at /layers/0/entries/0");
  expect_format_error(
      "{\"format\":\"bitmix-latency-table\",\"version\":1,\"batch\":1,\"threads\":1,\"layers\":"
      "[{\"name\":\"a\",\"entries\":[{\"w_bits\":2,\"a_bits\":2,\"ms\":1e400}]}]}",
      "number overflow");
  // Integers out of int's range or written as reals (the latency_table fuzz target found the
  // first: nlohmann's get<int>() of it is undefined behaviour).
  const std::string head = "{\"format\":\"bitmix-latency-table\",\"version\":1,\"batch\":1,\"threads\":1,\"layers\":"
                           "[{\"name\":\"a\",\"entries\":[{\"w_bits\":";
  expect_format_error(head + "377777777777777777777,\"a_bits\":2,\"ms\":1}]}]}", "\"w_bits\" = 3.777777777777778e+20: expected an integer");
  expect_format_error(head + "2,\"a_bits\":1e20,\"ms\":1}]}]}", "\"a_bits\" = 1e+20: expected an integer");
  expect_format_error(head + "2,\"a_bits\":2,\"ms\":\"1\"}]}]}", "\"ms\" is not a number");
  expect_format_error("{\"format\":\"bitmix-latency-table\",\"version\":1e30,\"batch\":1,\"threads\":1,\"layers\":[]}",
                      "version 1e+30");
  expect_format_error("{\"format\":\"bitmix-latency-table\",\"version\":1,\"batch\":1.5,\"threads\":1,\"layers\":[]}",
                      "\"batch\" = 1.5");
  EXPECT_THROW(LatencyTable::load(dir_ / "missing.json"), IoError);
}

}  // namespace
}  // namespace bitmix::search
