// BitConfig JSON (quant::BitConfig::parse). An accepted config round-trips through to_json().
#include <string>

#include "bitmix/quant/bit_config.hpp"
#include "fuzz/fuzz_common.hpp"

BITMIX_FUZZ_TARGET({
  const std::string text(input.begin(), input.end());
  const bitmix::quant::BitConfig config = bitmix::quant::BitConfig::parse(text, "fuzz.json");
  const std::string json = config.to_json();
  if (bitmix::quant::BitConfig::parse(json, "again.json").to_json() != json) __builtin_trap();
})
