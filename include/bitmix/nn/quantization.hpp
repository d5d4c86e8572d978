#pragma once
// Quantization-aware training: the adapter between quant's quantizers and nn's layers.
//
//   const Shape image{3, 32, 32};
//   quant::BitConfig config = nn::uniform_bit_config(*model, image, "resnet20", nn::UniformBits{4, 4});
//   nn::apply_bit_config(*model, image, config);     // a QuantizerTransform on every layer's weight and input
//   nn::load_quantized_model_state(*model, nn::load_checkpoint("float.ckpt"), {}, "float.ckpt");
//   nn::calibrate_quantizers(*model, batches);       // optional: see docs/quantization.md, "QAT"
//   nn::Trainer(*model, train, &test, options).fit();
//
// Every quantizable layer the config names (Conv2d, Linear) gets a weight quantizer and an
// input-activation quantizer as its weight_transform / input_transform. Their state is named
// "<layer>.weight_transform.<local>" and "<layer>.input_transform.<local>" with the quantizer's
// local names ("layer1.0.conv1.weight_transform.step", "conv1.input_transform.initialized"), so
// checkpoints save and restore it with the model, and the search's checkpoints (which use the
// same names for the chosen candidate) load into a model built from its BitConfig.
//
// Which inputs are signed: the first quantizable layer in forward order takes the model input
// (the normalized image, which is negative as often as not) and gets a signed activation grid;
// every other quantizable layer of the zoo's models reads post-ReLU values (BasicBlocks, VGG
// stages, pooling before fc) and gets an unsigned grid, which has one more bit of resolution.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/quant/bit_config.hpp"
#include "bitmix/quant/calibrator.hpp"
#include "bitmix/quant/incremental.hpp"
#include "bitmix/quant/quantizer.hpp"

namespace bitmix::data {
class BatchLoader;
}

namespace bitmix::nn {

// A TensorTransform that fake-quantizes with one quant::Quantizer: forward is the quantizer's
// forward, backward its straight-through input gradient plus the gradients of its own learnable
// parameters (LSQ's step, PACT's alpha), accumulated into their .grad.
class QuantizerTransform final : public TensorTransform {
 public:
  // Validates the spec (ArgumentError).
  explicit QuantizerTransform(const quant::QuantizerSpec& spec);
  explicit QuantizerTransform(quant::Quantizer quantizer);

  // The quantizer kind ("lsq", "pact", ...).
  std::string kind() const override;
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& x, const Tensor& grad_output) override;
  // The quantizer's own, with its local names ("step", "alpha", "initialized", "range_min").
  std::vector<Parameter*> parameters() override;
  std::vector<Buffer*> buffers() override;
  void set_training(bool training) override;

  // For the deployment compiler (integer export: quantizer().quantize(weight), params()) and
  // for calibration.
  quant::Quantizer& quantizer() { return quantizer_; }
  const quant::Quantizer& quantizer() const { return quantizer_; }
  const quant::QuantizerSpec& spec() const { return quantizer_.spec(); }

  // Observation for post-training calibration: between begin_observation and
  // end_observation, forward feeds its input to a calibrator and returns it unchanged (the
  // network runs in float), and backward passes the gradient through.
  void begin_observation(const quant::CalibrationOptions& options);
  bool observing() const { return calibrator_ != nullptr; }
  // Sets the quantizer's range from the observations and stops observing. Throws
  // ArgumentError if nothing was observed or the quantizer takes no range.
  void end_observation();
  // Stops observing without changing the quantizer.
  void cancel_observation() { calibrator_.reset(); }

  // Bypass: forward returns its input unchanged and backward passes the gradient through (the
  // float network, e.g. while other quantizers observe). Observation implies bypass.
  void set_bypass(bool bypass) { bypass_ = bypass; }
  bool bypassed() const { return bypass_ || calibrator_ != nullptr; }

 private:
  quant::Quantizer quantizer_;
  std::unique_ptr<quant::Calibrator> calibrator_;
  bool bypass_ = false;
  Tensor output_, grad_input_;
};

// ---- Bit configurations and models.

struct QuantizationOptions {
  // Give the first quantizable layer (the one reading the model input) a signed input grid.
  // Turn off only for a model whose input is non-negative and not normalized.
  bool signed_first_input = true;
};

// The quantizable layers' names in forward order: what a BitConfig for the model lists.
// image_shape is one input image, [C, H, W].
std::vector<std::string> quantizable_layer_names(const Module& model, const Shape& image_shape);

// A uniform configuration: every layer at w_bits / a_bits with the given kinds, then the
// policy's pins (the first conv and the last linear at 8 bits by default; BitPolicy::none()
// quantizes them like the others).
struct UniformBits {
  UniformBits(int w = 4, int a = 4, quant::QuantizerKind w_kind = quant::QuantizerKind::lsq,
              quant::QuantizerKind a_kind = quant::QuantizerKind::lsq)
      : w_bits(w), a_bits(a), w_quant(w_kind), a_quant(a_kind) {}

  int w_bits = 4;
  int a_bits = 4;
  quant::QuantizerKind w_quant = quant::QuantizerKind::lsq;
  quant::QuantizerKind a_quant = quant::QuantizerKind::lsq;
  // Per output channel by default: the bit-serial kernels apply one scale per output channel in
  // their epilogue anyway, and low-bit weights lose much less with a scale per channel.
  quant::Granularity w_granularity = quant::Granularity::per_channel;
  int64_t w_block = quant::QuantizerSpec{}.block_size;  // DSConv weights: input channels per block
  quant::BitPolicy policy;
};

// Builds the configuration annotated with the model's MACs and weight counts and with totals.
// A layer whose kind cannot take what it is given falls back to LSQ for that quantizer, so the
// policy stays a statement about bits: pinned layers whose weight kind cannot represent the
// pinned bits (binary, ternary, power-of-two at 7-8 bits), and a first layer whose activation
// kind cannot read a signed input (pact, dorefa). Anything else invalid (bits outside 1..8, a
// kind that does not fit the role) is an ArgumentError naming the value.
quant::BitConfig uniform_bit_config(const Module& model, const Shape& image_shape, std::string model_name,
                                    const UniformBits& bits);

// Sets every entry's "macs" and "params" (weight elements) from the model, which is the truth
// for the run (a file written for another image size has other MACs), and fills the totals.
// Entries naming no layer of the model are left as they are.
void annotate_bit_config(quant::BitConfig& config, const Module& model, const Shape& image_shape);

// The costs of a configuration on this model: macs, params, bitops (sum MACs * w_bits * a_bits)
// and weight_bits (sum weights * storage bits), all set. Float layers count 32 bits.
quant::BitTotals bit_config_totals(const quant::BitConfig& config, const Module& model, const Shape& image_shape);

// Throws ArgumentError naming the entry unless the configuration fits the model: valid entries
// (bits, kinds, policy), exactly the model's quantizable layers in its order, and quantizers
// that the layer can take (a signed input grid on the first layer, see QuantizationOptions).
void validate_bit_config(const quant::BitConfig& config, const Module& model, const Shape& image_shape,
                         const QuantizationOptions& options = {});

// Validates, then attaches to every layer a weight QuantizerTransform (per channel along the
// output channels when the entry says so) and an input QuantizerTransform, replacing any
// transform already attached. Entries with a float kind attach nothing for that tensor. The
// transforms take the layer's training mode. On error the model is left unchanged.
void apply_bit_config(Module& model, const Shape& image_shape, const quant::BitConfig& config,
                      const QuantizationOptions& options = {});

// The layers of `model` with their quantizers, in forward order of `image_shape`; weight or
// input is nullptr where no QuantizerTransform is attached.
struct LayerQuantizers {
  std::string name;
  Module* layer = nullptr;  // the Conv2d or Linear
  QuantizerTransform* weight = nullptr;
  QuantizerTransform* input = nullptr;
};
std::vector<LayerQuantizers> attached_quantizers(Module& model, const Shape& image_shape);

// What is attached, read back as a BitConfig (tensors without a quantizer are "float", 32 bits),
// annotated with MACs, weight counts and totals. Throws ArgumentError naming the layer when a
// layer carries a transform that is not a QuantizerTransform (a search mixture).
quant::BitConfig attached_bit_config(Module& model, const Shape& image_shape, std::string model_name,
                                     quant::BitPolicy policy = quant::BitPolicy::none());

// Detaches every transform from the model's Conv2d and Linear layers (back to plain fp32).
void remove_quantizers(Module& model);

// ---- Checkpoints.

// Loads a checkpoint into a model with quantizers attached. Every other parameter and buffer
// must be in the checkpoint (FormatError listing the missing ones, as load_model_state);
// quantizer state may be absent, as in a float checkpoint. Per quantizer:
//   * all of its entries present: restored as saved;
//   * all of its learnable parameters present, but not its "initialized" flag (a bitwidth
//     search exports the chosen candidate's step and nothing else): restored, and marked
//     initialized so the first forward does not overwrite them;
//   * otherwise: its data-driven state is reset ("initialized" = 0), so it initializes on its
//     first forward or by calibrate_quantizers (its state was derived from other weights).
// Entries the model lacks are an error unless options.allow_unexpected (allow_missing is
// ignored: only quantizer state may be missing). On error the model is left unchanged.
struct QuantizedLoadReport {
  LoadReport model;                             // what load_model_state reported
  std::vector<std::string> restored;            // quantizers (as "<layer>.weight_transform") restored
  std::vector<std::string> marked_initialized;  // restored from their parameters alone
  std::vector<std::string> to_initialize;       // left to initialize from data
};
QuantizedLoadReport load_quantized_model_state(Module& model, const Checkpoint& checkpoint,
                                               const LoadOptions& options = {},
                                               std::string_view source = "checkpoint");

// ---- Calibration before fine-tuning.

struct QatCalibrationOptions {
  quant::CalibrationOptions method{quant::CalibrationMethod::mse};
  // Also calibrate LSQ weight steps on the weights themselves (their own initialization is
  // 2 mean|w| / sqrt(Q_P)). Other weight kinds derive their scale from the current weights on
  // every forward and are left alone.
  bool weights = true;
  // Only these quantizers ("<layer>.input_transform", "<layer>.weight_transform"; e.g. the
  // to_initialize list of load_quantized_model_state); empty = all.
  std::vector<std::string> only;
};

struct CalibrationReport {
  int64_t batches = 0;
  std::vector<std::string> calibrated;  // "<layer>.input_transform", "<layer>.weight_transform"
  std::vector<std::string> skipped;     // take no range (dorefa, sawb, ...) or not in `only`
};

// Post-training calibration of the attached quantizers that take a range: the input quantizers
// of kind uniform, symmetric, pact and lsq observe their inputs over `batches` forward passes
// of the float network (every quantizer bypassed, the model in evaluation mode so BatchNorm's
// running statistics are used and left unchanged), then take the method's range; LSQ weight
// quantizers are calibrated on the weights. Ranges of uniform/symmetric activations are then
// fixed (the observers stop); LSQ steps and PACT alphas are starting points for training.
// The model's training mode is restored. Throws ArgumentError if `batches` is empty.
CalibrationReport calibrate_quantizers(Module& model, std::span<const Tensor> batches,
                                       const QatCalibrationOptions& options = {});
// The first `batches` batches of the loader's current epoch.
CalibrationReport calibrate_quantizers(Module& model, const data::BatchLoader& loader, int64_t batches,
                                       const QatCalibrationOptions& options = {});

// ---- The `--quant` names of bitmix train.

// A quantization scheme: the weight and activation kinds of a uniform configuration.
struct QuantScheme {
  quant::QuantizerKind w_quant = quant::QuantizerKind::lsq;
  quant::QuantizerKind a_quant = quant::QuantizerKind::lsq;
};
// INQ (bitmix/quant/incremental.hpp) over a model: freezes `fraction` of every `inq` weight
// quantizer's weights (ArgumentError naming the layer). Returns the sums over the layers.
bool has_inq_quantizers(Module& model, const Shape& image_shape);
quant::InqFreezeReport inq_freeze(Module& model, const Shape& image_shape, double fraction);

// "lsq" (LSQ weights and activations), "pact" (DoReFa weights, PACT activations, as in the PACT
// paper), "dorefa", "uniform", "symmetric" (both tensors), "sawb" (SAWB weights, PACT
// activations, as in the SAWB paper), "pot", "binary", "ternary", "syq", "dsconv", "inq" (those weights, LSQ
// activations), or an explicit "WEIGHT/ACTIVATION" pair ("sawb/lsq"). ArgumentError naming the
// text and the accepted forms.
QuantScheme parse_quant_scheme(std::string_view text);
// Every single name parse_quant_scheme accepts.
const std::vector<std::string>& quant_scheme_names();

}  // namespace bitmix::nn
