#include "bitmix/deploy/layer_timing.hpp"

#include <fmt/format.h>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/layers.hpp"

namespace bitmix::deploy {

std::vector<runtime::LayerShape> timing_shapes(const std::vector<nn::LayerInfo>& layers, int64_t batch) {
  std::vector<runtime::LayerShape> shapes;
  for (const nn::LayerInfo& layer : layers) {
    runtime::LayerShape s;
    s.name = layer.name;
    s.batch = batch;
    s.quantized_input = shapes.empty();
    if (layer.conv != nullptr) {
      const nn::Conv2dOptions& c = layer.conv->options();
      const bool depthwise = c.groups > 1 && c.groups == c.in_channels;
      if (c.groups != 1 && !depthwise)
        throw ArgumentError(fmt::format("layer {}: grouped convolution ({} groups) has no bit-serial kernel",
                                        layer.name, c.groups));
      s.kind = runtime::LayerKind::conv2d;
      s.in_channels = c.in_channels;
      s.out_channels = c.out_channels;
      s.height = layer.input_shape.at(1);
      s.width = layer.input_shape.at(2);
      s.kernel_h = static_cast<int>(c.kernel_h);
      s.kernel_w = static_cast<int>(c.kernel_w);
      s.stride_h = static_cast<int>(c.stride_h);
      s.stride_w = static_cast<int>(c.stride_w);
      s.pad_h = static_cast<int>(c.pad_h);
      s.pad_w = static_cast<int>(c.pad_w);
      s.depthwise = depthwise;
      s.packed_output = true;
      s.relu = true;
    } else if (layer.linear != nullptr) {
      s.kind = runtime::LayerKind::linear;
      s.in_channels = layer.linear->in_features();
      s.out_channels = layer.linear->out_features();
      s.packed_output = false;
      s.relu = false;
    } else {
      throw ArgumentError(fmt::format("layer {} is neither a convolution nor a linear layer", layer.name));
    }
    shapes.push_back(std::move(s));
  }
  return shapes;
}

}  // namespace bitmix::deploy
