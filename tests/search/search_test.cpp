// The whole search on a small synthetic problem: budgets steer the strengths, the selection
// meets the budget, and the artifacts are what the rest of the pipeline reads.
#include "bitmix/search/search.hpp"
#include "bitmix/search/dnas.hpp"
#include "bitmix/search/cost.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/models.hpp"

namespace bitmix::search {
namespace {
namespace fs = std::filesystem;

// 12x12 grey images; the label says which quadrant is brightest.
data::Dataset quadrant_dataset(int64_t n, uint64_t seed) {
  Rng rng(seed);
  data::Dataset d;
  d.name = "quadrants";
  d.channels = 1;
  d.height = d.width = 12;
  d.class_names = {"tl", "tr", "bl", "br"};
  for (int64_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(rng.below(4));
    d.labels.push_back(static_cast<uint8_t>(label));
    for (int y = 0; y < 12; ++y)
      for (int x = 0; x < 12; ++x) {
        const int quadrant = (y >= 6 ? 2 : 0) + (x >= 6 ? 1 : 0);
        const float base = quadrant == label ? 170.0f : 60.0f;
        d.images.push_back(static_cast<uint8_t>(std::clamp(base + 40.0f * rng.normal(), 0.0f, 255.0f)));
      }
  }
  return d;
}

class SearchRun : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("bitmix_search_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    data_.train = quadrant_dataset(256, 1);
    data_.test = quadrant_dataset(64, 2);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static nn::ModelSpec model_spec() {
    nn::ModelSpec spec;
    spec.arch = "resnet20";
    spec.in_channels = 1;
    spec.image_height = spec.image_width = 12;
    spec.num_classes = 4;
    spec.width = 4;
    spec.seed = 3;
    return spec;
  }
  std::unique_ptr<nn::Module> model() const { return nn::make_model(model_spec()); }

  SearchOptions options(double avg_bits, const std::string& name) const {
    SearchOptions o;
    o.budget = {Budget::Kind::avg_bits, avg_bits};
    o.penalty_weight = 20.0;
    o.strength_lr = 0.1f;
    o.train.epochs = 2;
    o.train.batch_size = 32;
    o.train.lr = 0.02f;
    o.train.progress = false;
    o.train.seed = 5;
    o.out_dir = dir_ / name;
    return o;
  }

  fs::path dir_;
  data::DatasetSplits data_;
};

double mean_searched_bits(const quant::BitConfig& config) {
  double sum = 0;
  int n = 0;
  for (std::size_t i = 1; i + 1 < config.layers.size(); ++i, ++n) sum += config.layers[i].w_bits + config.layers[i].a_bits;
  return sum / (2.0 * n);
}

TEST_F(SearchRun, TightBudgetSelectsFewerBitsAndEveryBudgetIsMet) {
  auto tight_model = model(), loose_model = model();
  const SearchResult tight = run_search(*tight_model, data_, options(2.5, "tight"), nn::RunMetadata{});
  const SearchResult loose = run_search(*loose_model, data_, options(4.5, "loose"), nn::RunMetadata{});
  for (const SearchResult* r : {&tight, &loose}) {
    EXPECT_LE(r->selection.cost, r->budget.value);
    EXPECT_GE(r->selection.cost, 0.95 * r->budget.value);  // the fill step lands on the budget
  }
  EXPECT_LT(mean_searched_bits(tight.config), mean_searched_bits(loose.config));
  // The penalty itself steered the strengths (before any selection): compare expected costs.
  // The last column of the last row of strengths.csv: E[cost] after the final epoch.
  auto final_expected = [](const fs::path& csv) {
    const std::string text = read_file_text(csv);
    return std::stod(text.substr(text.rfind(',') + 1));
  };
  const double tight_expected = final_expected(dir_ / "tight" / "strengths.csv");
  const double loose_expected = final_expected(dir_ / "loose" / "strengths.csv");
  EXPECT_LT(tight_expected, loose_expected);
  EXPECT_LT(tight_expected, 1.3 * tight.budget.value);
}

TEST_F(SearchRun, WritesArtifactsThePipelineReads) {
  auto m = model();
  SearchOptions o = options(3.0, "run");
  o.train.epochs = 1;
  nn::RunMetadata run;
  run.model = model_spec();
  run.data.spec = "quadrants";
  run.provenance = nn::Provenance::current("search", "bitmix search --test", 5);
  const SearchResult result = run_search(*m, data_, o, run);
  const fs::path out = o.out_dir;
  for (const char* file : {"bits.json", "model.ckpt", "strengths.csv", "bits.svg", "strengths.svg", "summary.json",
                           "supernet/log.csv", "supernet/model.ckpt"})
    EXPECT_TRUE(fs::exists(out / file)) << file;

  const quant::BitConfig config = quant::BitConfig::load(out / "bits.json");
  std::vector<std::string> names;
  for (const nn::LayerInfo& l : model()->quantizable_layers({1, 12, 12})) names.push_back(l.name);
  EXPECT_NO_THROW(config.validate_for_model(names));
  EXPECT_EQ(config.layers.front().w_bits, 8);
  EXPECT_EQ(config.layers.back().a_bits, 8);
  ASSERT_TRUE(config.layers[1].macs.has_value());
  EXPECT_GT(*config.layers[1].macs, 0);

  // The fine-tuning checkpoint holds the meta weights and the chosen candidates' quantizer
  // state under QAT names, and nothing of the supernet's strengths.
  const nn::Checkpoint ck = nn::load_checkpoint(out / "model.ckpt");
  EXPECT_NE(ck.find(nn::CheckpointTensorKind::parameter, "layer1.0.conv1.weight"), nullptr);
  EXPECT_NE(ck.find(nn::CheckpointTensorKind::parameter, "layer1.0.conv1.weight_transform.step"), nullptr);
  EXPECT_NE(ck.find(nn::CheckpointTensorKind::parameter, "layer1.0.conv1.input_transform.step"), nullptr);
  for (const nn::CheckpointEntry& e : ck.entries) {
    EXPECT_EQ(e.name.find("strength"), std::string::npos) << e.name;
    EXPECT_EQ(e.name.find(".b2."), std::string::npos) << e.name;
  }
  // Its metadata carries the BitConfig itself (not a file name), the model, the supernet's
  // normalization and the provenance; the supernet's checkpoint carries no BitConfig.
  const nn::RunMetadata meta = nn::read_run_metadata(ck, out / "model.ckpt");
  ASSERT_TRUE(meta.quantization.has_value());
  EXPECT_EQ(meta.quantization->bit_config.to_json(), config.to_json());
  ASSERT_TRUE(meta.model.has_value());
  EXPECT_EQ(nn::model_spec_to_json(*meta.model), nn::model_spec_to_json(model_spec()));
  EXPECT_EQ(meta.data.spec, "quadrants");
  EXPECT_EQ(meta.data.class_names, data_.train.class_names);
  EXPECT_EQ(meta.normalization.mean.size(), 1u);
  EXPECT_EQ(meta.provenance.producer, "search");
  EXPECT_EQ(meta.provenance.command_line, "bitmix search --test");
  EXPECT_FALSE(meta.training.has_value());
  const nn::RunMetadata supernet = nn::read_run_metadata(nn::load_checkpoint(out / "supernet/model.ckpt"),
                                                         out / "supernet/model.ckpt");
  EXPECT_EQ(supernet.provenance.producer, "search-supernet");
  EXPECT_FALSE(supernet.quantization.has_value());
  ASSERT_TRUE(supernet.training.has_value());
  EXPECT_EQ(supernet.training->epoch, 1);
  EXPECT_EQ(supernet.normalization.mean, meta.normalization.mean);
  // The exported step is the one of the selected candidate.
  const int w_bits = config.at("layer1.0.conv1").w_bits;
  auto* conv = dynamic_cast<nn::Conv2d*>(m->find("layer1.0.conv1"));
  ASSERT_NE(conv, nullptr);
  auto* mixture = dynamic_cast<QuantizerMixture*>(conv->weight_transform());
  ASSERT_NE(mixture, nullptr);
  std::size_t index = 0;
  while (mixture->bits()[index] != w_bits) ++index;
  const Tensor& expected = mixture->quantizer(index).parameters().at(0)->value;
  const Tensor& saved = ck.find(nn::CheckpointTensorKind::parameter, "layer1.0.conv1.weight_transform.step")->value;
  ASSERT_TRUE(saved.same_shape(expected));
  for (int64_t i = 0; i < saved.numel(); ++i) EXPECT_EQ(saved[i], expected[i]);

  // strengths.csv: a header, then one row per layer for epoch 0 and epoch 1.
  const std::string csv = read_file_text(out / "strengths.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 2 * static_cast<long>(names.size()));
}

TEST_F(SearchRun, BilevelAndGumbelRun) {
  auto m1 = model(), m2 = model();
  SearchOptions bilevel = options(3.0, "bilevel");
  bilevel.train.epochs = 1;
  bilevel.bilevel = true;
  bilevel.holdout_fraction = 0.25;
  const SearchResult a = run_search(*m1, data_, bilevel, nn::RunMetadata{});
  EXPECT_LE(a.selection.cost, a.budget.value);
  SearchOptions gumbel = options(3.0, "gumbel");
  gumbel.train.epochs = 1;
  gumbel.gumbel = true;
  const SearchResult b = run_search(*m2, data_, gumbel, nn::RunMetadata{});
  EXPECT_LE(b.selection.cost, b.budget.value);
}

TEST_F(SearchRun, DnasBaselineSearchesAndExportsTheChosenWeightCopy) {
  auto m = model();
  SearchOptions o = options(3.0, "dnas");
  o.method = SearchMethod::dnas;
  o.candidates = {{2, 4}, {2, 4}};
  o.train.epochs = 1;
  const SearchResult r = run_search(*m, data_, o, nn::RunMetadata{});
  EXPECT_LE(r.selection.cost, r.budget.value);
  auto& conv = dynamic_cast<nn::Conv2d&>(*m->find("layer2.0.conv2"));
  auto& dnas = dynamic_cast<DnasConvolution&>(*conv.compute_override());
  const int w_bits = r.config.at("layer2.0.conv2").w_bits;
  const std::size_t index = w_bits == 2 ? 0 : 1;
  const nn::Checkpoint ck = nn::load_checkpoint(o.out_dir / "model.ckpt");
  const nn::CheckpointEntry* weight = ck.find(nn::CheckpointTensorKind::parameter, "layer2.0.conv2.weight");
  ASSERT_NE(weight, nullptr);
  const Tensor& copy = dnas.weight_copy(index).value;
  for (int64_t i = 0; i < copy.numel(); ++i) ASSERT_EQ(weight->value[i], copy[i]);
  EXPECT_NE(ck.find(nn::CheckpointTensorKind::parameter, "layer2.0.conv2.weight_transform.step"), nullptr);
  for (const nn::CheckpointEntry& e : ck.entries) EXPECT_EQ(e.name.find("override"), std::string::npos) << e.name;
}

TEST_F(SearchRun, LatencyBudgetFromATableFile) {
  auto m = model();
  const std::vector<nn::LayerInfo> layers = m->quantizable_layers({1, 12, 12});
  // A table as `bitmix latency` writes one (runtime's timing fills it; search only reads it),
  // here with times that grow with the bits but not in proportion to the BitOPs, so that the
  // latency budget is a cost of its own.
  LatencyTable table("test", 1, 1);
  for (const nn::LayerInfo& l : layers)
    for (int w : {2, 3, 4, 5, 8})
      for (int a : {2, 3, 4, 5, 8})
        table.set(l.name, w, a, 1e-3 + 1e-9 * static_cast<double>(l.macs_per_image) * (w + a + 0.25 * w * a));
  fs::create_directories(dir_);
  table.save(dir_ / "latency.json");
  std::vector<LayerInfo> infos;
  for (const nn::LayerInfo& l : layers) infos.push_back({l.name, l.macs_per_image, l.weight_count, false, 8, 8});
  infos.front().pinned = infos.back().pinned = true;
  // Above the cheapest configuration of the candidates (uniform W2A2 with the pins), so the
  // budget is feasible whatever the timing noise of this machine.
  const double budget_ms = 1.2 * CostModel(CostKind::latency, infos, &table).uniform(2, 2);
  SearchOptions o = options(3.0, "latency_run");
  o.train.epochs = 1;
  o.budget = {Budget::Kind::latency_ms, budget_ms};
  o.latency_table = dir_ / "latency.json";
  const SearchResult r = run_search(*m, data_, o, nn::RunMetadata{});
  EXPECT_EQ(r.budget.kind, CostKind::latency);
  EXPECT_LE(r.selection.cost, budget_ms);
}

TEST_F(SearchRun, ImpossibleBudgetFailsBeforeTraining) {
  auto m = model();
  SearchOptions o = options(1.0, "impossible");  // below W2A2, the cheapest candidates
  try {
    run_search(*m, data_, o, nn::RunMetadata{});
    FAIL();
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("cheapest"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(o.out_dir / "supernet" / "model.ckpt"));
  SearchOptions latency = options(3.0, "latency");
  latency.budget = {Budget::Kind::latency_ms, 1.0};
  EXPECT_THROW(run_search(*model(), data_, latency, nn::RunMetadata{}), ArgumentError);
}

}  // namespace
}  // namespace bitmix::search
