#include "bitmix/search/latency.hpp"

#include <gtest/gtest.h>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/search/selection.hpp"

namespace bitmix::search {
namespace {

std::unique_ptr<nn::Module> small_resnet() {
  nn::ModelSpec spec;
  spec.in_channels = 1;
  spec.image_height = spec.image_width = 12;
  spec.num_classes = 4;
  spec.width = 4;
  return nn::make_model(spec);
}

TEST(Latency, MeasuresEveryLayerAndPair) {
  const auto model = small_resnet();
  const std::vector<nn::LayerInfo> layers = model->quantizable_layers({1, 12, 12});
  LatencyOptions options;
  options.w_bits = {2, 8};
  options.a_bits = {3, 8};
  options.min_seconds = 0.0;
  options.min_repeats = 1;
  const LatencyTable table = measure_latency(layers, options, "test machine");
  EXPECT_EQ(table.batch(), 1);
  for (const nn::LayerInfo& l : layers)
    for (int w : options.w_bits)
      for (int a : options.a_bits) {
        ASSERT_TRUE(table.has(l.name, w, a)) << l.name;
        EXPECT_GT(table.at(l.name, w, a), 0.0) << l.name;
      }
  // A latency cost model built on it: a search budget can be resolved and met.
  std::vector<LayerInfo> infos;
  for (const nn::LayerInfo& l : layers) infos.push_back({l.name, l.macs_per_image, l.weight_count, false, 8, 8});
  infos.front().pinned = infos.back().pinned = true;
  const CostModel model_cost(CostKind::latency, infos, &table);
  EXPECT_GT(model_cost.uniform(2, 3), 0.0);
  EXPECT_NO_THROW(table.require(infos, {2, 8}, {3, 8}));
  EXPECT_THROW(table.require(infos, {2, 4}, {3}), ArgumentError);
}

TEST(Latency, RejectsBadBitsAndBatch) {
  const auto model = small_resnet();
  const std::vector<nn::LayerInfo> layers = model->quantizable_layers({1, 12, 12});
  LatencyOptions options;
  EXPECT_THROW(measure_layer_ms(layers[1], 9, 2, options), ArgumentError);
  EXPECT_THROW(measure_layer_ms(layers[1], 2, 0, options), ArgumentError);
  options.batch = 0;
  EXPECT_THROW(measure_latency(layers, options, "m"), ArgumentError);
}

}  // namespace
}  // namespace bitmix::search
