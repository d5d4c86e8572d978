// Latency tables (search::LatencyTable::parse).
#include <string>

#include "bitmix/search/cost.hpp"
#include "fuzz/fuzz_common.hpp"

BITMIX_FUZZ_TARGET({
  const std::string text(input.begin(), input.end());
  const bitmix::search::LatencyTable table = bitmix::search::LatencyTable::parse(text, "fuzz.json");
  if (table.batch() < 1 || table.threads() < 1) __builtin_trap();
})
