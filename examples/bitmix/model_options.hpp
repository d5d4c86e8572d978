#pragma once
// Flags shared by the subcommands that build a model and train it (search, and the
// quantization-aware paths): dataset subsets, architecture, training hyper-parameters.

#include <memory>
#include <string>

#include "bitmix/data/dataset.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "bitmix/nn/trainer.hpp"
#include "cli.hpp"

namespace bitmix::cli {

// --train-subset, --test-subset.
void add_data_subset_options(ArgParser& args);
// Loads --data and applies the subsets.
data::DatasetSplits load_data(const ArgParser& args, data::DataSpec* spec_out = nullptr);

// --model, --shortcut, --width.
void add_model_options(ArgParser& args);
// The architecture from --model/--shortcut/--width. With `checkpoint` (the --init or --resume file) whose metadata records a model, that
// model is the default instead: a checkpoint knows what it holds, so fine-tuning a width-8
// network needs no --width 8. A flag given explicitly that contradicts the checkpoint is a
// UsageError naming both values.
nn::ModelSpec model_spec(const ArgParser& args, const data::Dataset& train, uint64_t seed,
                         const std::string& checkpoint = {});
// "bitmix <command> <args...>" (arguments with spaces or quotes quoted), for checkpoint provenance.
std::string command_line(int argc, char** argv);
// The run description a subcommand gives the checkpoints it writes: the model, the --data
// string, the provenance (this command line, seed, the checkpoint it started from).
nn::RunMetadata run_metadata(const nn::ModelSpec& spec, const data::DataSpec& data, const std::string& producer,
                             int argc, char** argv, uint64_t seed, const std::string& parent);

// --epochs, --batch, --lr, --wd, --momentum, --schedule, --warmup, --augment, --pad-crop,
// --eval-batch, --no-progress, with defaults suited to the subcommand.
struct TrainingDefaults {
  int epochs = 15;
  double lr = 0.1;
  double wd = 5e-4;
};
void add_training_options(ArgParser& args, const TrainingDefaults& defaults);
// `augment_out` receives the resolved augmentation name.
nn::TrainerOptions training_options(const ArgParser& args, const data::DataSpec& data, uint64_t seed,
                                    std::string* augment_out = nullptr);

// Loads a checkpoint's parameters and buffers into `model`, tolerating entries the model or the
// checkpoint lacks when `partial` (e.g. a float checkpoint into a model with quantizers), and
// prints what was loaded.
void load_initial_weights(nn::Module& model, const std::string& path, bool partial);

}  // namespace bitmix::cli
