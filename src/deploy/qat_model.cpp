// Rebuilding a QAT model from a trainer checkpoint (plus a BitConfig) for compilation and
// parity checks.
#include <fmt/format.h>

#include "bitmix/core/error.hpp"
#include "bitmix/data/dataset.hpp"
#include "bitmix/deploy/compiler.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/nn/run_metadata.hpp"

namespace bitmix::deploy {

std::vector<std::string> class_names_for(const std::string& data) {
  const std::string kind = data.substr(0, data.find(':'));
  if (kind == "fashion-mnist") return data::fashion_mnist_class_names();
  if (kind == "cifar10") return data::cifar10_class_names();
  if (kind == "mnist") return {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  return {};
}

QatModel load_qat_model(const std::filesystem::path& checkpoint_path, const std::optional<std::filesystem::path>& bits) {
  QatModel out;
  out.source = checkpoint_path.string();
  const std::string& source = out.source;
  nn::Checkpoint checkpoint = nn::load_checkpoint(checkpoint_path);
  nn::MetadataReadOptions read_options;
  read_options.resolve_bit_config_file = !bits;  // a BitConfig given by the caller replaces the recorded one
  const nn::RunMetadata meta = nn::read_run_metadata(checkpoint, checkpoint_path, read_options);
  if (!meta.model)
    throw FormatError(fmt::format("checkpoint {}: metadata field 'model' is null: the checkpoint holds a model "
                                  "outside the zoo, which cannot be rebuilt for compilation",
                                  source));
  out.spec = *meta.model;
  out.data = meta.data.spec;
  out.class_names = meta.data.class_names;
  out.mean = meta.normalization.mean;
  out.stddev = meta.normalization.stddev;

  if (bits) {
    out.config = quant::BitConfig::load(*bits);
  } else if (meta.quantization) {
    out.config = meta.quantization->bit_config;
  } else {
    throw ArgumentError(fmt::format("checkpoint {} is not quantized (no bit configuration in its metadata): give the "
                                    "BitConfig it was fine-tuned with (--bits bits.json)",
                                    source));
  }

  out.model = nn::make_model(out.spec);
  const Shape image = out.image_shape();
  nn::apply_bit_config(*out.model, image, out.config);
  const nn::QuantizedLoadReport report = nn::load_quantized_model_state(*out.model, checkpoint, {}, source);
  // Weight quantizers without state initialize from the weights themselves (deterministic);
  // activation quantizers need data, which the compiler does not have.
  std::vector<std::string> missing;
  for (const nn::LayerQuantizers& l : nn::attached_quantizers(*out.model, image)) {
    const std::string w = l.name + ".weight_transform", a = l.name + ".input_transform";
    for (const std::string& name : report.to_initialize) {
      if (name == w && l.weight != nullptr) {
        const Tensor* weight = nullptr;
        if (auto* conv = dynamic_cast<nn::Conv2d*>(l.layer); conv != nullptr) weight = &conv->weight().value;
        else if (auto* linear = dynamic_cast<nn::Linear*>(l.layer); linear != nullptr) weight = &linear->weight().value;
        if (weight != nullptr) l.weight->quantizer().forward(*weight);
      } else if (name == a) {
        missing.push_back(name);
      }
    }
  }
  if (!missing.empty())
    throw ArgumentError(fmt::format("checkpoint {}: no state for the activation quantizers {}; fine-tune at these bits "
                                    "(bitmix train --bits ... --init {}) or calibrate (bitmix train --eval-only "
                                    "--calibrate N) first",
                                    source, fmt::join(missing, ", "), source));
  out.model->eval();
  return out;
}

CompileOptions QatModel::compile_options() const {
  CompileOptions o;
  o.architecture = spec.arch;
  o.mean = mean;
  o.stddev = stddev;
  o.class_names = !class_names.empty() ? class_names : class_names_for(data);
  if (static_cast<int64_t>(o.class_names.size()) != spec.num_classes) o.class_names.clear();
  // "resnet20-w2a2" for uniform inner layers, "resnet20-mixed" otherwise.
  int w = -1, a = -1;
  bool uniform = true;
  for (std::size_t i = 0; i < config.layers.size(); ++i) {
    const quant::LayerBits& l = config.layers[i];
    const bool pinned = (i == 0 && config.policy.first_layer_bits) ||
                        (i + 1 == config.layers.size() && config.policy.last_layer_bits);
    if (pinned) continue;
    if (w < 0) {
      w = l.w_bits;
      a = l.a_bits;
    } else if (l.w_bits != w || l.a_bits != a) {
      uniform = false;
    }
  }
  o.name = uniform && w > 0 ? fmt::format("{}-w{}a{}", spec.arch, w, a) : fmt::format("{}-mixed", spec.arch);
  o.extra["source"] = source;
  o.extra["bit_config"] = config.to_json();
  if (!data.empty()) o.extra["data"] = data;
  return o;
}

}  // namespace bitmix::deploy
