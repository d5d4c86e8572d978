// Checkpoints (nn::parse_checkpoint): the binary container. An accepted checkpoint serializes
// back to bytes that parse to the same entries.
#include <vector>

#include "bitmix/nn/checkpoint.hpp"
#include "fuzz/fuzz_common.hpp"

BITMIX_FUZZ_TARGET({
  const bitmix::nn::Checkpoint ck = bitmix::nn::parse_checkpoint(std::vector<uint8_t>(input.begin(), input.end()), "fuzz.ckpt");
  const bitmix::nn::Checkpoint again = bitmix::nn::parse_checkpoint(bitmix::nn::serialize_checkpoint(ck), "again.ckpt");
  if (again.entries.size() != ck.entries.size() || again.metadata != ck.metadata) __builtin_trap();
})
