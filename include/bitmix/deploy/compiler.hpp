#pragma once
// The deployment compiler: a quantization-aware (QAT) model, i.e. an nn model with a
// QuantizerTransform on the weight and the input of every Conv2d and Linear, becomes an
// integer runtime::Model (docs/runtime.md, "Compiling"):
//
//   * weights -> the quantizer's integer codes, packed into bit planes;
//   * BatchNorm (running statistics) folded into the epilogue of the conv before it:
//       scale[oc] = s_a * s_w[oc] * gamma[oc] / sqrt(var[oc] + eps)
//       bias[oc]  = beta[oc] - mean[oc] * gamma[oc] / sqrt(var[oc] + eps)  (+ conv bias, scaled)
//   * the next layer's input quantizer fused into the epilogue as requantization where the
//     float value is needed by nobody else (conv1 -> conv2 inside a residual block);
//   * residual additions in float (the shortcut reads the unquantized block input, as the
//     fake-quant model does), option-A and option-B shortcuts, pooling, the classifier.
//
//   deploy::QatModel qat = deploy::load_qat_model("finetuned.ckpt", "bits.json");
//   runtime::Model model = deploy::compile(*qat.model, qat.image_shape(), qat.compile_options());
//   model.save("model.bmx");
//
// What cannot be deployed is refused with an ArgumentError naming the layer: a layer without
// quantizers (a float entry of the BitConfig), a quantizer that is not initialized, weights with
// a zero point (uniform affine weights) or codes wider than 8 bits, grouped convolutions other
// than depthwise, modules the runtime has no op for.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/quant/bit_config.hpp"
#include "bitmix/runtime/model.hpp"

namespace bitmix::deploy {

struct CompileOptions {
  std::string name;          // the model's name in the file (default: the architecture)
  std::string architecture;  // "resnet20", ... (informational)
  // The input normalization the model was trained with, per channel, for pixels in [0, 1]
  // (empty: the model takes its inputs as they are).
  std::vector<float> mean, stddev;
  std::vector<std::string> class_names;           // empty or one per output
  std::map<std::string, runtime::MetaValue> extra;  // provenance, stored as "info.<key>"
};

// Approximations the compiler had to make (empty when the integer model follows the fake-quant
// arithmetic wherever the kernels allow).
struct CompileReport {
  std::vector<std::string> notes;
};

// Compiles `model` (quantizers attached, BatchNorm statistics as trained; the model is only
// read) for images of `image_shape` = [C, H, W].
runtime::Model compile(nn::Module& model, const Shape& image_shape, const CompileOptions& options,
                       CompileReport* report = nullptr);

// A QAT model rebuilt from a checkpoint: the architecture, normalization and class names from its
// metadata (nn::read_run_metadata), the BitConfig (the given file, or the one the checkpoint's
// metadata holds: a quantized `bitmix train`, the search), the weights, BatchNorm statistics and
// quantizer state. In evaluation mode.
struct QatModel {
  nn::ModelSpec spec;
  std::unique_ptr<nn::Module> model;
  quant::BitConfig config;
  std::vector<float> mean, stddev;       // normalization from the checkpoint (one per channel)
  std::string data;                      // the --data the model was trained on ("fashion-mnist", ...), if recorded
  std::vector<std::string> class_names;  // the training set's, if recorded
  std::string source;               // the checkpoint path

  Shape image_shape() const { return {spec.in_channels, spec.image_height, spec.image_width}; }
  // Name "<arch>-<bits summary>", normalization, class names for the recorded dataset kind
  // (fashion-mnist, mnist, cifar10), provenance.
  CompileOptions compile_options() const;
};

// Throws IoError/FormatError for unreadable or malformed files (metadata without normalization,
// a missing field: FormatError naming the file and the field), ArgumentError when the bits do
// not fit the model or quantizers have no state in the checkpoint (e.g. a float checkpoint:
// fine-tune it at these bits first, or calibrate it with `bitmix train --eval-only --calibrate`).
QatModel load_qat_model(const std::filesystem::path& checkpoint,
                        const std::optional<std::filesystem::path>& bits = std::nullopt);

// The class names of a dataset kind ("fashion-mnist", "mnist", "cifar10"; the part of a --data
// spec before ':'), empty for an unknown kind.
std::vector<std::string> class_names_for(const std::string& data);

}  // namespace bitmix::deploy
