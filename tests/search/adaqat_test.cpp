// AdaQAT: the finite-difference bitwidth gradient against losses computed directly at the
// neighbouring configurations, the cost differences against the BitOPs formula, and the whole
// search under a tight budget (bits move down, the BitConfig meets the budget).
#include "bitmix/search/adaqat.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/search/search.hpp"

namespace bitmix::search {
namespace {
namespace fs = std::filesystem;

nn::ModelSpec tiny_spec() {
  nn::ModelSpec spec;
  spec.arch = "resnet20";
  spec.in_channels = 1;
  spec.image_height = spec.image_width = 8;
  spec.num_classes = 4;
  spec.width = 2;
  spec.seed = 3;
  return spec;
}

SearchOptions adaqat_options() {
  SearchOptions o;
  o.method = SearchMethod::adaqat;
  o.candidates = {{2, 3, 4, 5, 6, 7, 8}, {2, 3, 4, 5, 6, 7, 8}};
  return o;
}

struct Fixture {
  std::unique_ptr<nn::Module> model = nn::make_model(tiny_spec());
  std::vector<SearchedLayer> layers;
  std::vector<LayerInfo> infos;
  std::unique_ptr<CostModel> cost;
  Tensor images{{16, 1, 8, 8}};
  std::vector<int> labels;

  Fixture() {
    layers = attach_search(*model, {1, 8, 8}, adaqat_options());
    infos = cost_layers(layers);
    cost = std::make_unique<CostModel>(CostKind::bitops, infos);
    Rng rng(11);
    for (int64_t i = 0; i < images.numel(); ++i) images[i] = rng.normal();
    for (int i = 0; i < 16; ++i) labels.push_back(static_cast<int>(rng.below(4)));
    model->train(true);
  }
  double loss() {
    const Tensor& logits = model->forward(images);
    return nn::softmax_cross_entropy(logits, labels, 0.0f, nullptr).loss;
  }
};

TEST(AdaQat, RoundsUpAndClamps) {
  EXPECT_EQ(adaqat_bits(3.0, 2, 8), 3);
  EXPECT_EQ(adaqat_bits(3.01, 2, 8), 4);
  EXPECT_EQ(adaqat_bits(1.2, 2, 8), 2);
  EXPECT_EQ(adaqat_bits(8.0, 2, 8), 8);
  EXPECT_EQ(adaqat_bits(9.5, 2, 8), 8);
}

// dL/db_l by the estimator == L(b) − L(b with that one bitwidth at ceil(b_l) − 1), both losses
// evaluated here directly (forward + cross-entropy at explicit configurations): the same
// numbers, bit for bit. At the lowest bitwidth it is the forward difference.
TEST(AdaQat, LossGradientIsTheFiniteDifferenceOfTheLoss) {
  Fixture f;
  AdaQat ada(f.layers, *f.cost, 1e12, 1.0, AdaQatOptions{});
  Rng rng(5);
  std::vector<double> w(f.layers.size()), a(f.layers.size());
  for (std::size_t l = 0; l < w.size(); ++l) {
    w[l] = 2.0 + 6.0 * rng.uniform_double();
    a[l] = 2.0 + 6.0 * rng.uniform_double();
  }
  w[1] = 2.0;  // at the bottom: forward difference
  a[2] = 2.0;
  ada.set_relaxed(w, a);
  w = ada.relaxed_w();
  a = ada.relaxed_a();

  std::vector<std::vector<float>> buffers_before;
  for (const NamedBuffer& b : f.model->named_buffers())
    buffers_before.emplace_back(b.buffer->value.data(), b.buffer->value.data() + b.buffer->value.numel());
  const BitGradients g = ada.loss_gradient(*f.model, f.images, f.labels, 0.0f);
  // The measurement leaves the model as it was: buffers (BatchNorm statistics) and bits.
  std::size_t i = 0;
  for (const NamedBuffer& b : f.model->named_buffers()) {
    const std::vector<float> now(b.buffer->value.data(), b.buffer->value.data() + b.buffer->value.numel());
    EXPECT_EQ(now, buffers_before[i++]) << b.name;
  }

  const double base = f.loss();
  int checked = 0;
  for (std::size_t l = 0; l < f.layers.size(); ++l) {
    if (f.layers[l].pinned) {
      EXPECT_EQ(g.w[l], 0.0);
      EXPECT_EQ(g.a[l], 0.0);
      continue;
    }
    for (bool weights : {true, false}) {
      std::vector<double> w2 = w, a2 = a;
      double& b = weights ? w2[l] : a2[l];
      const int k = adaqat_bits(b, 2, 8);
      const bool bottom = k == 2;
      b = bottom ? 3.0 : k - 1.0;
      ada.set_relaxed(w2, a2);
      const double moved = f.loss();
      const double expected = bottom ? moved - base : base - moved;
      EXPECT_EQ(weights ? g.w[l] : g.a[l], expected) << f.layers[l].info.name << (weights ? " weights" : " inputs");
      ++checked;
    }
    ada.set_relaxed(w, a);
  }
  EXPECT_EQ(checked, 2 * (static_cast<int>(f.layers.size()) - 2));
  // The differences are not all zero: the estimator measures something.
  double sum = 0;
  for (std::size_t l = 0; l < g.w.size(); ++l) sum += std::abs(g.w[l]) + std::abs(g.a[l]);
  EXPECT_GT(sum, 0.0);
}

// BitOPs = Σ MACs·w·a, so dC/dw_l = MACs_l·a_l and dC/da_l = MACs_l·w_l exactly (a difference of
// one bit of a bilinear cost), whichever side the difference is taken on.
TEST(AdaQat, CostGradientMatchesTheBitopsFormula) {
  Fixture f;
  AdaQat ada(f.layers, *f.cost, 1e12, 1.0, AdaQatOptions{});
  std::vector<double> w(f.layers.size(), 5.5), a(f.layers.size(), 3.2);
  w[3] = 2.0;
  ada.set_relaxed(w, a);
  const BitGradients g = ada.cost_gradient();
  const std::vector<LayerBits> bits = ada.bits();
  for (std::size_t l = 0; l < f.layers.size(); ++l) {
    if (f.layers[l].pinned) continue;
    const double macs = static_cast<double>(f.infos[l].macs);
    EXPECT_DOUBLE_EQ(g.w[l], macs * bits[l].a_bits) << l;
    EXPECT_DOUBLE_EQ(g.a[l], macs * bits[l].w_bits) << l;
  }
  // The penalty is zero under the budget and positive over it.
  EXPECT_EQ(ada.penalty().value, 0.0);
  AdaQat over(f.layers, *f.cost, 1.0, 2.0, AdaQatOptions{});
  EXPECT_GT(over.penalty().value, 0.0);
  EXPECT_GT(over.penalty().d_cost, 0.0);
}

TEST(AdaQat, RefusesBadOptions) {
  Fixture f;
  AdaQatOptions o;
  o.init_bits = 9;
  EXPECT_THROW(AdaQat(f.layers, *f.cost, 1e9, 1.0, o), ArgumentError);
  o = {};
  o.bit_lr = 0;
  EXPECT_THROW(AdaQat(f.layers, *f.cost, 1e9, 1.0, o), ArgumentError);
  o = {};
  o.every = 0;
  EXPECT_THROW(AdaQat(f.layers, *f.cost, 1e9, 1.0, o), ArgumentError);
  o = {};
  o.min_bits = 3;  // the mixtures' candidates are 2..8
  EXPECT_THROW(AdaQat(f.layers, *f.cost, 1e9, 1.0, o), ArgumentError);
}

data::Dataset quadrant_dataset(int64_t n, uint64_t seed) {
  Rng rng(seed);
  data::Dataset d;
  d.name = "quadrants";
  d.channels = 1;
  d.height = d.width = 8;
  d.class_names = {"tl", "tr", "bl", "br"};
  for (int64_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(rng.below(4));
    d.labels.push_back(static_cast<uint8_t>(label));
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x) {
        const int quadrant = (y >= 4 ? 2 : 0) + (x >= 4 ? 1 : 0);
        const float base = quadrant == label ? 170.0f : 60.0f;
        d.images.push_back(static_cast<uint8_t>(std::clamp(base + 40.0f * rng.normal(), 0.0f, 255.0f)));
      }
  }
  return d;
}

// From 8 bits under the budget of uniform W3A3: the relaxed bits go down during training, and
// the BitConfig (in bits.json and in the checkpoint's run metadata) meets the budget.
TEST(AdaQat, TightBudgetMovesBitsDownAndIsMet) {
  const fs::path dir = fs::temp_directory_path() / "bitmix_adaqat_search";
  fs::remove_all(dir);
  data::DatasetSplits data;
  data.train = quadrant_dataset(128, 1);
  data.test = quadrant_dataset(32, 2);
  std::unique_ptr<nn::Module> model = nn::make_model(tiny_spec());
  SearchOptions o = adaqat_options();
  o.budget = {Budget::Kind::avg_bits, 3.0};
  o.adaqat.bit_lr = 0.3;
  o.train.epochs = 2;
  o.train.batch_size = 32;
  o.train.lr = 0.02f;
  o.train.progress = false;
  o.train.seed = 5;
  o.out_dir = dir;
  const SearchResult result = run_search(*model, data, o, nn::RunMetadata{});

  const std::vector<LayerInfo> infos = cost_layers(attach_search(*nn::make_model(tiny_spec()), {1, 8, 8}, o));
  const double budget = resolve_budget(o.budget, infos).value;
  EXPECT_LE(result.selection.cost, budget);
  EXPECT_LE(static_cast<double>(*result.config.compute_totals().bitops), budget);

  // relaxed_bits.csv: the mean relaxed bitwidth of the searched layers fell well below 8.
  std::ifstream csv(dir / "relaxed_bits.csv");
  std::string line;
  std::getline(csv, line);
  double sum = 0;
  int count = 0;
  while (std::getline(csv, line)) {
    std::stringstream row(line);
    std::string epoch, name, pinned, w, a;
    std::getline(row, epoch, ',');
    std::getline(row, name, ',');
    std::getline(row, pinned, ',');
    std::getline(row, w, ',');
    std::getline(row, a, ',');
    if (epoch != "2" || pinned == "1") continue;
    sum += std::stod(w) + std::stod(a);
    count += 2;
  }
  ASSERT_GT(count, 0);
  EXPECT_LT(sum / count, 7.0);

  const nn::RunMetadata meta = nn::read_run_metadata(nn::load_checkpoint(dir / "model.ckpt"), dir / "model.ckpt");
  ASSERT_TRUE(meta.quantization.has_value());
  EXPECT_EQ(meta.quantization->bit_config.to_json(), quant::BitConfig::load(dir / "bits.json").to_json());
  EXPECT_TRUE(fs::exists(dir / "relaxed_bits.svg"));
  fs::remove_all(dir);
}

TEST(AdaQat, SearchRefusesStrengthOptions) {
  data::DatasetSplits data;
  data.train = quadrant_dataset(32, 1);
  data.test = quadrant_dataset(8, 2);
  std::unique_ptr<nn::Module> model = nn::make_model(tiny_spec());
  SearchOptions o = adaqat_options();
  o.gumbel = true;
  o.out_dir = fs::temp_directory_path() / "bitmix_adaqat_refused";
  EXPECT_THROW(run_search(*model, data, o, nn::RunMetadata{}), ArgumentError);
  EXPECT_EQ(parse_search_method("adaqat"), SearchMethod::adaqat);
  EXPECT_EQ(search_method_name(SearchMethod::adaqat), "adaqat");
}

}  // namespace
}  // namespace bitmix::search
