// nn layers mapped to the runtime shapes that `bitmix latency` times.
#include "bitmix/deploy/layer_timing.hpp"

#include <gtest/gtest.h>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/models.hpp"

namespace bitmix::deploy {
namespace {

std::unique_ptr<nn::Module> small_resnet() {
  nn::ModelSpec spec;
  spec.in_channels = 1;
  spec.image_height = spec.image_width = 12;
  spec.num_classes = 4;
  spec.width = 4;
  return nn::make_model(spec);
}

TEST(LayerTiming, ShapesFollowTheLayersAndEveryOneCanBeTimed) {
  const auto model = small_resnet();
  const std::vector<nn::LayerInfo> layers = model->quantizable_layers({1, 12, 12});
  const std::vector<runtime::LayerShape> shapes = timing_shapes(layers, 2);
  ASSERT_EQ(shapes.size(), layers.size());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const nn::LayerInfo& l = layers[i];
    const runtime::LayerShape& s = shapes[i];
    EXPECT_EQ(s.name, l.name);
    EXPECT_EQ(s.batch, 2);
    EXPECT_EQ(s.quantized_input, i == 0) << l.name;  // only the first reads the model input
    if (l.conv != nullptr) {
      const nn::Conv2dOptions& c = l.conv->options();
      EXPECT_EQ(s.kind, runtime::LayerKind::conv2d);
      EXPECT_EQ(s.in_channels, c.in_channels);
      EXPECT_EQ(s.out_channels, c.out_channels);
      EXPECT_EQ(s.height, l.input_shape[1]);
      EXPECT_EQ(s.width, l.input_shape[2]);
      EXPECT_EQ(s.kernel_h, c.kernel_h);
      EXPECT_EQ(s.kernel_w, c.kernel_w);
      EXPECT_EQ(s.stride_h, c.stride_h);
      EXPECT_EQ(s.stride_w, c.stride_w);
      EXPECT_EQ(s.pad_h, c.pad_h);
      EXPECT_EQ(s.pad_w, c.pad_w);
      EXPECT_FALSE(s.depthwise);
      EXPECT_TRUE(s.packed_output);
    } else {
      ASSERT_NE(l.linear, nullptr);
      EXPECT_EQ(s.kind, runtime::LayerKind::linear);
      EXPECT_EQ(s.in_channels, l.linear->in_features());
      EXPECT_EQ(s.out_channels, l.linear->out_features());
      EXPECT_FALSE(s.packed_output);
    }
  }
  EXPECT_EQ(shapes.back().kind, runtime::LayerKind::linear);
  // Each shape is one the runtime runs, at the extreme pairs.
  runtime::TimingOptions o;
  o.min_seconds = 0.0;
  o.min_repeats = 1;
  for (const runtime::LayerShape& s : shapes)
    for (int w : {2, 8})
      for (int a : {3, 8}) EXPECT_GT(runtime::time_layer_ms(s, w, a, o), 0.0) << s.name;
}

TEST(LayerTiming, DepthwiseIsMappedAndOtherGroupingsAreRefusedByName) {
  Rng rng(3);
  nn::Conv2d depthwise(nn::Conv2dOptions::square(8, 16, 3, 1, 1, /*groups=*/8), rng);
  nn::Conv2d grouped(nn::Conv2dOptions::square(8, 16, 3, 1, 1, /*groups=*/2), rng);
  nn::LayerInfo d{"blocks.0.dw", "Conv2d", &depthwise, &depthwise, nullptr, {8, 6, 6}, {16, 6, 6}, 0, 0, 0};
  const std::vector<runtime::LayerShape> shapes = timing_shapes({d}, 1);
  ASSERT_EQ(shapes.size(), 1u);
  EXPECT_TRUE(shapes[0].depthwise);
  runtime::TimingOptions o;
  o.min_seconds = 0.0;
  o.min_repeats = 1;
  EXPECT_GT(runtime::time_layer_ms(shapes[0], 4, 4, o), 0.0);
  nn::LayerInfo g{"blocks.1.grouped", "Conv2d", &grouped, &grouped, nullptr, {8, 6, 6}, {16, 6, 6}, 0, 0, 0};
  try {
    timing_shapes({d, g}, 1);
    FAIL() << "expected a refusal";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.1.grouped"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bitmix::deploy
