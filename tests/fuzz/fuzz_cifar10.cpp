// CIFAR-10 binary batches (data::parse_cifar10_batch).
#include "bitmix/data/dataset.hpp"
#include "fuzz/fuzz_common.hpp"

BITMIX_FUZZ_TARGET({
  bitmix::data::Dataset dataset;
  bitmix::data::parse_cifar10_batch(input, "fuzz.bin", dataset);
  // An accepted batch is self-consistent.
  if (dataset.images.size() != dataset.labels.size() * 3 * 32 * 32) __builtin_trap();
})
