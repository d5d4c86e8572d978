#pragma once
// The quantization-aware-training flags of `bitmix train` (--quant, --wbits, --abits,
// --first-last-bits, --w-granularity, --bits, --calibrate, --calibrate-method): declared,
// checked and acted on here so that cmd_train.cpp only calls in at four points.

#include <cstdint>
#include <string>
#include <vector>

#include "bitmix/data/dataset.hpp"
#include "bitmix/data/loader.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "bitmix/nn/trainer.hpp"
#include "bitmix/quant/bit_config.hpp"
#include "cli.hpp"

namespace bitmix::cli {

void add_quantization_options(ArgParser& args);

struct QuantizationSetup {
  bool enabled = false;
  std::string source;       // "--quant lsq --wbits 4 --abits 4" or "--bits FILE"
  quant::BitConfig config;  // annotated with the model's MACs and weights, totals set
  std::vector<std::string> to_initialize;  // quantizers --init left to initialize from data
  Shape image;                             // one input image, [C, H, W]
  std::vector<double> inq_steps;           // --inq-steps when the model has INQ weights, else empty

  // What the checkpoints' metadata records (nn::RunMetadata::quantization).
  nn::QuantizationRecipe recipe() const { return {source, config}; }
  // "bits: <summary>; 0.123 GBitOPs/image (float 41.5), weights 84.1 KiB (float 1.02 MiB)"
  std::string summary_line() const;
};

// Builds the BitConfig the flags ask for and attaches it to `model` (nothing when no QAT flag
// is given). Bad combinations and configurations that do not fit the model are UsageErrors
// naming the flag.
QuantizationSetup apply_quantization_options(const ArgParser& args, nn::Module& model, const nn::ModelSpec& spec);

// --init CKPT into a quantized model: float weights strictly, quantizer state where present
// (see nn::load_quantized_model_state); prints what was loaded.
void init_quantized_model(QuantizationSetup& setup, nn::Module& model, const nn::Checkpoint& checkpoint,
                          const std::string& source, bool allow_unexpected);

// --calibrate N: calibrates the quantizers that have no state yet on N shuffled, unaugmented
// training batches. Prints what it did.
void calibrate_if_asked(const ArgParser& args, QuantizationSetup& setup, nn::Module& model,
                        const data::Dataset& train, const data::Normalization& normalization, int64_t batch_size,
                        uint64_t seed);

// For --eval-only: one forward pass of a training batch in evaluation mode, so quantizers that
// initialize from data do so from training images, not from the first test batch.
void initialize_from_training_batch(const QuantizationSetup& setup, nn::Module& model, const data::Dataset& train,
                                    const data::Normalization& normalization, int64_t batch_size, uint64_t seed);

// Training with INQ weights (--inq-steps f1,...,fS): the epochs are split into S stages as evenly
// as integers allow (stage k ends after floor((k + 1) * epochs / S) epochs); before stage k,
// fraction f_k of every INQ layer's weights is frozen. Resumed runs continue in their stage.
// UsageError if there are fewer epochs than steps.
const std::vector<nn::EpochStats>& fit_with_inq(const QuantizationSetup& setup, nn::Trainer& trainer,
                                                nn::Module& model, int epochs);
// --eval-only with INQ weights: freezes the last step's fraction (post-training INQ).
void freeze_inq_for_evaluation(const QuantizationSetup& setup, nn::Module& model);

}  // namespace bitmix::cli
