#pragma once
// The model zoo: CIFAR-style ResNets (He et al. 2016, section 4.2) and a small VGG.
//
// ResNet-(6n+2), n = 3, 5, 7, 9, 18 for ResNet-20/32/44/56/110:
//   conv1 (3x3, 16) + bn1 + relu
//   layer1: n BasicBlocks at 16 channels, layer2: n at 32 (first stride 2), layer3: n at 64
//   avgpool (global) + fc
// BasicBlock: conv1 (3x3, stride s) + bn1 + relu, conv2 (3x3) + bn2, + shortcut, relu.
// Shortcut where the shape changes:
//   option A (default, as in the paper's CIFAR experiments): parameter-free identity, spatially
//     subsampled by the stride (x[:, :, ::2, ::2]) and zero-padded to the new channel count
//     ((out - in) / 2 zero channels on each side);
//   option B: projection, 1x1 conv with the stride + BatchNorm, child "shortcut" = Sequential
//     of "0" (Conv2d) and "1" (BatchNorm2d).
// The ReLUs are fused into the BatchNorm2d modules (fused_relu() == true for bn1 of the stem
// and of every block; bn2 of a block adds the shortcut before its ReLU), so a block's output
// is relu(bn2(conv2(...)) + shortcut(x)).
//
// Names follow the usual PyTorch CIFAR ResNet: "conv1", "bn1", "layer2.0.conv1",
// "layer2.0.bn2.running_var", "layer2.0.shortcut.0.weight" (option B), "fc.weight".
// Input channels, image size and class count come from the dataset, so the same architectures
// train on CIFAR-10 (3x32x32) and Fashion-MNIST (1x28x28).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bitmix/nn/graph.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/module.hpp"

namespace bitmix::nn {

enum class ShortcutOption { A, B };

struct ModelSpec {
  std::string arch = "resnet20";  // see model_names()
  int64_t in_channels = 3;
  int64_t image_height = 32;
  int64_t image_width = 32;
  int64_t num_classes = 10;
  ShortcutOption shortcut = ShortcutOption::A;
  int64_t width = 0;  // base width; 0 = the architecture's default (16 for ResNets, 64 for vgg-small)
  bool zero_init_residual = false;  // start every block's bn2 gamma at 0 (Goyal et al. 2017)
  uint64_t seed = 0;                // weight initialization
  // arch "graph": the DAG of a graph model (an imported network); the image shape and class
  // count above are its input and output. Empty for the zoo's architectures.
  std::optional<GraphSpec> graph;
};

// "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg-small" (the zoo; a spec
// with arch "graph" and a GraphSpec builds a GraphModel).
const std::vector<std::string>& model_names();
// Builds a model with initialized weights; throws ArgumentError naming the bad field.
std::unique_ptr<Module> make_model(const ModelSpec& spec);
// "A" / "B"; parse throws ArgumentError.
ShortcutOption parse_shortcut(std::string_view text);
std::string_view shortcut_name(ShortcutOption option);

// The spec as a JSON object text ({"arch": "resnet20", "in_channels": 3, ...}); the trainer
// stores it in checkpoint metadata under "model", so a checkpoint can rebuild its model.
std::string model_spec_to_json(const ModelSpec& spec);
// Reads the fields written by model_spec_to_json; a missing field, an unknown key, a value of
// another JSON type (0.5 for an integer) or out of range is a FormatError naming the field.
ModelSpec model_spec_from_json(std::string_view json);

class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, ShortcutOption shortcut, Rng& rng);

  Conv2d& conv1() { return *conv1_; }
  BatchNorm2d& bn1() { return *bn1_; }
  Conv2d& conv2() { return *conv2_; }
  BatchNorm2d& bn2() { return *bn2_; }
  // How the shortcut maps x: identity (same shape), option A (subsample + zero channels) or a
  // projection (option B, projection_conv()/projection_bn() set).
  enum class Shortcut { identity, subsample_pad, projection };
  Shortcut shortcut() const { return shortcut_; }
  int64_t stride() const { return stride_; }
  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  Conv2d* projection_conv() { return projection_conv_; }
  BatchNorm2d* projection_bn() { return projection_bn_; }

  const Tensor& forward(const Tensor& input) override;
  const Tensor& backward(const Tensor& grad_output) override;
  Shape output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers = nullptr) const override;

 private:
  int64_t in_channels_, out_channels_, stride_;
  Shortcut shortcut_;
  Conv2d* conv1_;
  BatchNorm2d* bn1_;
  Conv2d* conv2_;
  BatchNorm2d* bn2_;
  Sequential* projection_ = nullptr;
  Conv2d* projection_conv_ = nullptr;
  BatchNorm2d* projection_bn_ = nullptr;
  const Tensor* input_ = nullptr;
  Tensor shortcut_out_, grad_input_;
};

// A ResNet for small images: a Sequential of conv1, bn1, layer1..layer3 (Sequentials of
// BasicBlocks named "0", "1", ...), avgpool and fc, with typed accessors.
class ResNet : public Sequential {
 public:
  ResNet(int64_t depth, int64_t in_channels, int64_t num_classes, int64_t width, ShortcutOption shortcut,
         bool zero_init_residual, Rng& rng);
  int64_t depth() const { return depth_; }
  ShortcutOption shortcut_option() const { return shortcut_option_; }
  Conv2d& stem_conv() { return *stem_conv_; }
  BatchNorm2d& stem_bn() { return *stem_bn_; }
  // stages()[s] holds the blocks of layer(s+1) in order.
  const std::vector<std::vector<BasicBlock*>>& stages() const { return stages_; }
  Linear& fc() { return *fc_; }

 private:
  int64_t depth_;
  ShortcutOption shortcut_option_;
  Conv2d* stem_conv_;
  BatchNorm2d* stem_bn_;
  std::vector<std::vector<BasicBlock*>> stages_;
  Linear* fc_;
};

}  // namespace bitmix::nn
