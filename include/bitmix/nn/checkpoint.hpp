#pragma once
// Checkpoints: a versioned binary file of named float tensors (model parameters, buffers,
// optimizer state) plus a metadata text (the JSON of nn::RunMetadata: model, data,
// normalization, BitConfig, provenance, training state; see run_metadata.hpp), protected by a
// CRC-32 and written atomically. The layout is specified in docs/training.md.
//
// Loading validates everything (magic, version, header and section sizes, offsets and
// alignment, tensor sizes, duplicate names, checksum) and throws FormatError naming the file
// and what is wrong. Loading into a model checks every name and shape and names the entry at
// fault; missing or unexpected entries are errors unless explicitly tolerated (e.g. a float
// checkpoint loaded into a quantized model, whose quantizer parameters it does not have).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/nn/optimizer.hpp"
#include "bitmix/nn/run_metadata.hpp"

namespace bitmix::nn {

inline constexpr uint32_t kCheckpointVersion = 1;

enum class CheckpointTensorKind : uint8_t { parameter = 0, buffer = 1, optimizer_state = 2, extra = 3 };
std::string_view checkpoint_kind_name(CheckpointTensorKind kind);

struct CheckpointEntry {
  std::string name;
  CheckpointTensorKind kind = CheckpointTensorKind::parameter;
  Tensor value;
};

struct Checkpoint {
  std::string metadata;  // JSON object text ("{}" when empty): to_json(RunMetadata), see set_run_metadata
  std::vector<CheckpointEntry> entries;

  // The entry of that kind and name, or nullptr.
  const CheckpointEntry* find(CheckpointTensorKind kind, std::string_view name) const;
  void add(CheckpointTensorKind kind, std::string name, const Tensor& value);
};

// Atomic write (temporary file, then rename). Throws IoError / ArgumentError (duplicate names).
void save_checkpoint(const std::filesystem::path& path, const Checkpoint& checkpoint);
// Reads and validates a file; throws IoError / FormatError naming the file and the problem.
Checkpoint load_checkpoint(const std::filesystem::path& path);
// Same, from bytes already in memory; `source` names them in messages.
Checkpoint parse_checkpoint(const std::vector<uint8_t>& bytes, std::string_view source);
std::vector<uint8_t> serialize_checkpoint(const Checkpoint& checkpoint);

// Model parameters (kind parameter) and buffers (kind buffer), under their hierarchical names.
void add_model_state(Checkpoint& checkpoint, Module& model);

struct LoadOptions {
  bool allow_missing = false;     // model entries absent from the checkpoint keep their values
  bool allow_unexpected = false;  // checkpoint entries the model does not have are ignored
};
struct LoadReport {
  std::vector<std::string> loaded, missing, unexpected;
};
// Copies parameters and buffers into the model. Throws FormatError naming `source`, the entry
// and the shapes on a shape mismatch, and listing missing / unexpected entries unless allowed.
LoadReport load_model_state(Module& model, const Checkpoint& checkpoint, const LoadOptions& options = {},
                            std::string_view source = "checkpoint");

// Optimizer state under "<group>/<state name>" (kind optimizer_state).
void add_optimizer_state(Checkpoint& checkpoint, Optimizer& optimizer, std::string_view group);
// Restores it; every state tensor must be present with its shape (FormatError otherwise).
void load_optimizer_state(Optimizer& optimizer, const Checkpoint& checkpoint, std::string_view group,
                          std::string_view source = "checkpoint");

// A model rebuilt from a checkpoint: the architecture from its metadata's model spec (a
// FormatError naming "model" when it has none), the weights and buffers loaded (strictly unless
// told otherwise); `metadata` holds the rest (normalization, data, BitConfig, provenance).
struct LoadedModel {
  ModelSpec spec;
  std::unique_ptr<Module> model;
  RunMetadata metadata;
  Checkpoint checkpoint;
};
LoadedModel load_model_checkpoint(const std::filesystem::path& path, const LoadOptions& options = {});

}  // namespace bitmix::nn
