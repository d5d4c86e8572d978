#pragma once
// Internals of the CLADO measurement shared by clado.cpp, clado_cache.cpp and the tests.

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string_view>

namespace bitmix::search::detail {

// 64-bit FNV-1a, for cache keys.
class Fnv1a {
 public:
  void add(const void* data, std::size_t bytes);
  void add(std::string_view text) {
    add_u64(text.size());
    add(text.data(), text.size());
  }
  void add_u64(uint64_t v) { add(&v, sizeof v); }
  void add_double(double v) { add(&v, sizeof v); }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 1469598103934665603ULL;
};

// The cache file: finished evaluations (index -> mean loss) of the measurement with `key`.
//   bitmix-clado-cache 1
//   key <16 hex digits>
//   <index> <mean loss as a hexadecimal float>     (one line per evaluation, exact round trip)
// A missing file is an empty cache. FormatError naming the file and line for a malformed one;
// ArgumentError naming the file when it belongs to another key.
std::map<int64_t, double> load_clado_cache(const std::filesystem::path& path, uint64_t key);
// Atomic rewrite.
void save_clado_cache(const std::filesystem::path& path, uint64_t key, const std::map<int64_t, double>& entries);

}  // namespace bitmix::search::detail
