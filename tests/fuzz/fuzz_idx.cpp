// IDX files, plain and gzip (data::parse_idx).
#include <vector>

#include "bitmix/data/dataset.hpp"
#include "fuzz/fuzz_common.hpp"

BITMIX_FUZZ_TARGET({
  const bitmix::data::IdxArray array = bitmix::data::parse_idx(std::vector<uint8_t>(input.begin(), input.end()), "fuzz.idx");
  uint64_t count = 1;
  for (const int64_t d : array.dims) count *= static_cast<uint64_t>(d);
  if (count != array.data.size()) __builtin_trap();
})
