#pragma once
#include <cstdint>

namespace bitmix {

// Peak resident set size of this process so far, in bytes (getrusage); 0 where unknown.
// Run summaries report it, so the memory of a search and of plain training can be compared.
int64_t peak_rss_bytes();

}  // namespace bitmix
