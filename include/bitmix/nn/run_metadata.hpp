#pragma once
// The description of a run that every checkpoint carries: which model it holds, what data it was
// trained on and how that data was normalized, the BitConfig it is quantized at (if any), who
// produced it, and (for a trainer's checkpoint) the state a resume needs. One typed struct, one
// JSON layout (docs/training.md, "Checkpoint metadata"), one reader.
//
// Producing a checkpoint (any command: train, search, a post-training allocator, ...):
//
//   nn::RunMetadata run;
//   run.model = spec;                                   // nullopt only for models outside the zoo
//   run.data = nn::describe_data(train_set, data_spec.to_string());
//   run.normalization = normalization;                  // required
//   run.quantization = nn::QuantizationRecipe{"clado, budget 3 bits", config};
//   run.provenance = nn::Provenance::current("quantize", command_line, seed, parent_checkpoint);
//   nn::Checkpoint ck;
//   nn::set_run_metadata(ck, run);                      // validates, then stores the JSON text
//   nn::add_model_state(ck, model);
//   nn::save_checkpoint(path, ck);
//
// Reading one: nn::read_run_metadata(checkpoint, path). Every field is checked; a missing or
// malformed one is a FormatError naming the file, the field's JSON path and what was expected.
// Checkpoints written before the metadata was versioned (no "metadata_version") are read by a
// legacy path that maps their layout (see read_run_metadata).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/data/dataset.hpp"
#include "bitmix/data/loader.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/optimizer.hpp"
#include "bitmix/nn/training_options.hpp"
#include "bitmix/quant/bit_config.hpp"

namespace bitmix::nn {

struct Checkpoint;

// The "metadata_version" this build writes and the only one it reads (besides the legacy,
// unversioned layout).
inline constexpr int kRunMetadataVersion = 1;

struct DataDescription {
  std::string name;  // the dataset's name ("cifar10", "fashion-mnist", "bands", ...)
  std::string spec;  // the --data string it was loaded from ("cifar10:/data/cifar"); empty if unknown
  int64_t channels = 0, height = 0, width = 0;
  int64_t classes = 0;
  std::vector<std::string> class_names;  // empty or one per class
  int64_t train_images = 0, test_images = 0;
};
// Name, image shape, classes and class names of a loaded training set (test_images 0).
DataDescription describe_data(const data::Dataset& train, std::string spec = {});

// How the model was quantized: the BitConfig itself (never a file name) and the recipe that
// produced it ("--quant lsq --wbits 4 --abits 4 ...", "--bits bits.json", "EBS search, budget ...").
struct QuantizationRecipe {
  std::string source;
  quant::BitConfig bit_config;
};

struct Provenance {
  std::string producer;  // "train" | "search" | "search-supernet" | ... (the command that wrote it)
  std::string bitmix_version;
  std::string command_line;  // empty when not produced by the CLI
  uint64_t seed = 0;
  std::string parent;  // the checkpoint it started from (--init / --resume); empty = none
  int threads = 0;     // worker threads and instruction set of the producing process
  std::string isa;
  std::string notes;  // free text for humans (e.g. the search's method and budget)

  // This build's version, thread count and ISA, with the given fields.
  static Provenance current(std::string producer, std::string command_line = {}, uint64_t seed = 0,
                            std::string parent = {});
};

// One optimizer and its schedule: "main" (the trainer's) and every added parameter group.
struct ParameterGroupRecord {
  std::string name;
  std::string optimizer;  // Optimizer::kind(): "sgd", "adam", "adamw"
  LrScheduleOptions schedule;
};

// What Trainer::resume needs beyond the tensors, and the record of the run so far.
// An epoch stopped between two steps (an interrupted run, see Trainer): the batches done and
// the running sums of its statistics, from which a resumed run continues the epoch exactly.
struct PartialEpoch {
  int64_t batches = 0;  // done, >= 1
  double loss_sum = 0, extra_sum = 0;
  int64_t correct = 0, images = 0;
  double seconds = 0;
};

struct TrainingState {
  int epoch = 0;  // completed epochs
  int64_t step = 0;
  std::optional<PartialEpoch> partial;  // epoch + 1 was stopped part-way
  double train_seconds = 0;
  // The run's hyper-parameters. Not recorded: out_dir, progress and normalization (the latter is
  // RunMetadata::normalization).
  TrainerOptions options;
  std::vector<ParameterGroupRecord> groups;  // "main" first
  std::vector<EpochStats> history;
};

struct RunMetadata {
  std::optional<ModelSpec> model;  // nullopt: a model outside the zoo (it cannot be rebuilt)
  DataDescription data;
  // Per-channel mean and std of pixels in [0, 1] the model's inputs were normalized with.
  // Required: a model trained on normalized inputs is wrong without them. A model that takes raw
  // pixels records mean 0 and std 1.
  data::Normalization normalization;
  std::optional<QuantizationRecipe> quantization;
  Provenance provenance;
  std::optional<TrainingState> training;  // trainer checkpoints only

  // Every field in range (ArgumentError naming the field's JSON path): what to_json writes is
  // always readable.
  void validate() const;
};

// The JSON document (pretty-printed, stable key order). Validates first.
std::string to_json(const RunMetadata& metadata);

struct MetadataReadOptions {
  // Legacy search checkpoints name their BitConfig file (beside the checkpoint) instead of
  // holding it. When false (the caller brings its own BitConfig, e.g. --bits), that file is not
  // read and the recipe is left empty.
  bool resolve_bit_config_file = true;
};
// Parses a document of either layout; `source` names the file in messages, `directory` is where
// a legacy bit_config file name is resolved (the checkpoint's directory).
RunMetadata run_metadata_from_json(std::string_view text, std::string_view source,
                                   const std::filesystem::path& directory = {},
                                   const MetadataReadOptions& options = {});

// Validates `metadata` and stores it as the checkpoint's metadata text.
void set_run_metadata(Checkpoint& checkpoint, const RunMetadata& metadata);
// The metadata of a checkpoint read from the file at `path`: run_metadata_from_json with the
// file's directory. Throws FormatError naming `path`, the field and what was expected; a legacy
// bit_config file that cannot be read is a FormatError saying to pass --bits.
RunMetadata read_run_metadata(const Checkpoint& checkpoint, const std::filesystem::path& path,
                              const MetadataReadOptions& options = {});

}  // namespace bitmix::nn
