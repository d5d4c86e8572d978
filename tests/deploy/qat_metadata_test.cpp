// load_qat_model reads the checkpoint's metadata through nn::read_run_metadata: a checkpoint
// carrying its BitConfig (the search's, a quantized training run's) compiles without --bits; one
// without normalization or with malformed metadata is refused naming the file and the field; the
// search's earlier layout (the BitConfig as a file name beside the checkpoint) still loads.
#include <gtest/gtest.h>

#include <filesystem>

#include "bitmix/core/error.hpp"
#include "bitmix/deploy/compiler.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "deploy/deploy_test_util.hpp"
#include "nn/legacy_metadata.hpp"

namespace bitmix::deploy {
namespace {

namespace fs = std::filesystem;

class QatMetadata : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("bitmix_deploy_meta_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    net_ = testing::make_qat_net("resnet8", nn::UniformBits{2, 3}, 61);
  }
  void TearDown() override { fs::remove_all(dir_); }

  nn::RunMetadata run() const {
    nn::RunMetadata m;
    m.model = net_.spec;
    m.data.name = "synthetic";
    m.data.spec = "synthetic";
    m.data.channels = net_.spec.in_channels;
    m.data.height = net_.spec.image_height;
    m.data.width = net_.spec.image_width;
    m.data.classes = net_.spec.num_classes;
    m.data.class_names = {"a", "b", "c", "d", "e"};
    m.normalization = {{0.5f, 0.25f, 0.125f}, {0.5f, 0.5f, 0.25f}};
    m.quantization = nn::QuantizationRecipe{"search", net_.config};
    m.provenance = nn::Provenance::current("search", "bitmix search ...", 3);
    return m;
  }
  fs::path save(const std::string& name, const std::string& metadata) {
    nn::Checkpoint ck;
    nn::add_model_state(ck, *net_.model);
    ck.metadata = metadata;
    nn::save_checkpoint(dir_ / name, ck);
    return dir_ / name;
  }
  void expect_refused(const fs::path& ckpt, const std::vector<std::string>& parts) {
    try {
      load_qat_model(ckpt);
      ADD_FAILURE() << ckpt << " accepted";
    } catch (const FormatError& e) {
      for (const std::string& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find("has no \"model\" object"), std::string::npos) << e.what();
    }
  }

  fs::path dir_;
  testing::QatNet net_;
};

TEST_F(QatMetadata, TheRecordedBitConfigRebuildsTheModelWithoutABitsFile) {
  const fs::path ckpt = save("model.ckpt", nn::to_json(run()));
  const QatModel qat = load_qat_model(ckpt);
  EXPECT_EQ(qat.config.to_json(), net_.config.to_json());
  EXPECT_EQ(qat.mean, (std::vector<float>{0.5f, 0.25f, 0.125f}));
  const CompileOptions o = qat.compile_options();
  EXPECT_EQ(o.class_names, (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(o.name, "resnet8-w2a3");
  const runtime::Model a = compile(*qat.model, qat.image_shape(), o);
  const runtime::Model b = testing::compile_net(net_);
  Rng rng(5);
  const Tensor inputs = testing::random_inputs(rng, 6, net_.image());
  runtime::Session sa(a), sb(b);
  const Tensor la = sa.run_normalized(inputs), lb = sb.run_normalized(inputs);
  EXPECT_TRUE(testing::same_bits(la.data(), lb.data(), la.numel()));
}

TEST_F(QatMetadata, RefusesACheckpointWithoutNormalization) {
  nlohmann::ordered_json doc = nlohmann::ordered_json::parse(nn::to_json(run()));
  doc.erase("normalization");
  expect_refused(save("current.ckpt", doc.dump()), {"current.ckpt", "'normalization'"});
  // The earlier layout too (the user report: such a checkpoint exported without normalization).
  nlohmann::json legacy = nlohmann::json::parse(nn::testing::legacy_search_metadata(
      nn::testing::legacy_search_model_object(net_.spec, "synthetic", "none"), {0.5f, 0.5f, 0.5f}, {1.0f, 1.0f, 1.0f},
      "bits.json"));
  legacy.erase("normalization");
  net_.config.save(dir_ / "bits.json");
  expect_refused(save("legacy.ckpt", legacy.dump()), {"legacy.ckpt", "'normalization'"});
}

TEST_F(QatMetadata, RefusesMalformedMetadataWithTheJsonError) {
  const std::string text = nn::to_json(run());
  expect_refused(save("cut.ckpt", text.substr(0, text.size() - 10)), {"cut.ckpt", "not valid JSON"});
  nlohmann::ordered_json doc = nlohmann::ordered_json::parse(text);
  doc["normalization"]["std"] = "0.5";
  expect_refused(save("typed.ckpt", doc.dump()), {"typed.ckpt", "'normalization.std'", "an array of numbers"});
  doc = nlohmann::ordered_json::parse(text);
  doc["metadata_version"] = 7;
  expect_refused(save("future.ckpt", doc.dump()), {"future.ckpt", "metadata_version 7"});
}

TEST_F(QatMetadata, EarlierSearchCheckpointsFindTheirBitConfigBesideThem) {
  const fs::path ckpt = save("model.ckpt", nn::testing::legacy_search_metadata(
                                               nn::testing::legacy_search_model_object(net_.spec, "fashion-mnist", "none"),
                                               {0.5f, 0.5f, 0.5f}, {1.0f, 1.0f, 1.0f}, "bits.json"));
  net_.config.save(dir_ / "bits.json");
  EXPECT_EQ(load_qat_model(ckpt).config.to_json(), net_.config.to_json());
  // Without the file: refused, saying to pass --bits; with --bits, the file is not needed.
  fs::rename(dir_ / "bits.json", dir_ / "other.json");
  expect_refused(ckpt, {"model.ckpt", "bits.json", "--bits"});
  EXPECT_EQ(load_qat_model(ckpt, dir_ / "other.json").config.to_json(), net_.config.to_json());
}

}  // namespace
}  // namespace bitmix::deploy
