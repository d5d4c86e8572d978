// Run metadata, both layouts (nn::run_metadata_from_json). Legacy search checkpoints name a
// BitConfig file; the fuzzer does not follow file names (resolve_bit_config_file = false). An
// accepted document is written back by to_json and reads back to the same text.
#include <string>

#include "bitmix/nn/run_metadata.hpp"
#include "fuzz/fuzz_common.hpp"

BITMIX_FUZZ_TARGET({
  const std::string text(input.begin(), input.end());
  bitmix::nn::MetadataReadOptions options;
  options.resolve_bit_config_file = false;
  const bitmix::nn::RunMetadata metadata = bitmix::nn::run_metadata_from_json(text, "fuzz.ckpt", {}, options);
  const std::string json = bitmix::nn::to_json(metadata);
  if (bitmix::nn::to_json(bitmix::nn::run_metadata_from_json(json, "again.ckpt", {}, options)) != json) __builtin_trap();
})
