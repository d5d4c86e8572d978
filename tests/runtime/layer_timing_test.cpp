// Timing one layer through the session (the latency tables of `bitmix latency`).
#include "bitmix/runtime/layer_timing.hpp"

#include <gtest/gtest.h>

#include <string>

#include "bitmix/core/error.hpp"

namespace bitmix::runtime {
namespace {

LayerShape conv(std::string name, int64_t in, int64_t out, int64_t hw, int kernel, int stride, int pad) {
  LayerShape s;
  s.name = std::move(name);
  s.in_channels = in;
  s.out_channels = out;
  s.height = s.width = hw;
  s.kernel_h = s.kernel_w = kernel;
  s.stride_h = s.stride_w = stride;
  s.pad_h = s.pad_w = pad;
  return s;
}

TimingOptions quick() {
  TimingOptions o;
  o.min_seconds = 0.0;
  o.min_repeats = 1;
  return o;
}

TEST(LayerTiming, TimesEveryKindOfLayerAtEveryPair) {
  std::vector<LayerShape> layers = {
      conv("stem", 3, 8, 12, 3, 1, 1),      // narrow input from a quantize op: may run as a float GEMM
      conv("body", 8, 8, 12, 3, 1, 1),      // reads requantized codes: bit-serial
      conv("down", 8, 16, 12, 3, 2, 1),
      conv("pointwise", 16, 16, 6, 1, 1, 0),
      conv("depthwise", 16, 16, 6, 3, 1, 1),
  };
  layers[0].quantized_input = true;
  layers[4].depthwise = true;
  layers[2].packed_output = false;  // floats, as before a residual addition
  layers[2].relu = false;
  LayerShape fc;
  fc.name = "fc";
  fc.kind = LayerKind::linear;
  fc.in_channels = 16;
  fc.out_channels = 4;
  fc.packed_output = false;
  fc.relu = false;
  layers.push_back(fc);
  for (LayerShape& l : layers) {
    for (int64_t batch : {1, 3}) {
      l.batch = batch;
      for (int w : {1, 2, 8})
        for (int a : {1, 3, 8}) EXPECT_GT(time_layer_ms(l, w, a, quick()), 0.0) << l.name << " W" << w << "A" << a;
    }
  }
}

TEST(LayerTiming, RejectsBadBitsBatchAndShapesTheRuntimeCannotRun) {
  const LayerShape body = conv("layer1.0.conv2", 8, 8, 6, 3, 1, 1);
  const TimingOptions o = quick();
  EXPECT_THROW(time_layer_ms(body, 9, 2, o), ArgumentError);
  EXPECT_THROW(time_layer_ms(body, 2, 0, o), ArgumentError);
  LayerShape bad = body;
  bad.batch = 0;
  EXPECT_THROW(time_layer_ms(bad, 2, 2, o), ArgumentError);
  // The session's model validation applies and names the layer: here a reduction of 2048 * 9
  // terms could overflow the int32 accumulator at W8A8, but not at W2A2.
  LayerShape wide = conv("layer3.0.conv1", 2048, 4, 3, 3, 1, 1);
  EXPECT_GT(time_layer_ms(wide, 2, 2, o), 0.0);
  try {
    time_layer_ms(wide, 8, 8, o);
    FAIL() << "expected an accumulator-range error";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("layer3.0.conv1"), std::string::npos) << e.what();
  }
  LayerShape big = body;
  big.kernel_h = big.kernel_w = 9;  // a window larger than the padded 6x6 input
  EXPECT_THROW(time_layer_ms(big, 2, 2, o), Error);
  LayerShape fc;
  fc.name = "fc";
  fc.kind = LayerKind::linear;
  fc.in_channels = 8;
  fc.out_channels = 2;
  fc.height = 2;  // a linear layer reads a vector
  EXPECT_THROW(time_layer_ms(fc, 2, 2, o), ArgumentError);
  LayerShape depthwise = conv("dw", 8, 12, 6, 3, 1, 1);  // 12 outputs over 8 channels: no whole multiplier
  depthwise.depthwise = true;
  EXPECT_THROW(time_layer_ms(depthwise, 2, 2, o), ArgumentError);
}

}  // namespace
}  // namespace bitmix::runtime
