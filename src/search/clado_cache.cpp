// The CLADO measurement cache (see clado_internal.hpp).
#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "search/clado_internal.hpp"

namespace bitmix::search::detail {

namespace {
constexpr const char* kMagic = "bitmix-clado-cache";
constexpr int kVersion = 1;
}  // namespace

void Fnv1a::add(const void* data, std::size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    h_ ^= p[i];
    h_ *= 1099511628211ULL;
  }
}

std::map<int64_t, double> load_clado_cache(const std::filesystem::path& path, uint64_t key) {
  std::map<int64_t, double> entries;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return entries;
  const std::string file = path.string();
  std::istringstream in(read_file_text(path));
  std::string line;
  int64_t line_number = 0;
  auto fail = [&](const std::string& what) {
    throw FormatError(fmt::format("{}:{}: {} (expected a bitmix CLADO cache, version {})", file, line_number, what,
                                  kVersion));
  };
  ++line_number;
  if (!std::getline(in, line)) fail("empty file");
  {
    std::istringstream header(line);
    std::string magic;
    int version = 0;
    if (!(header >> magic >> version) || magic != kMagic) fail(fmt::format("bad header '{}'", line));
    if (version != kVersion) fail(fmt::format("unsupported version {}", version));
  }
  ++line_number;
  if (!std::getline(in, line)) fail("missing key line");
  {
    std::istringstream k(line);
    std::string word, hex;
    if (!(k >> word >> hex) || word != "key" || hex.size() != 16) fail(fmt::format("bad key line '{}'", line));
    char* end = nullptr;
    const uint64_t stored = std::strtoull(hex.c_str(), &end, 16);
    if (end != hex.c_str() + hex.size()) fail(fmt::format("bad key '{}'", hex));
    if (stored != key)
      throw ArgumentError(fmt::format("{}: this CLADO cache belongs to another measurement (key {:016x}, this one "
                                      "is {:016x}: another model, layer options, quantization settings or data); "
                                      "delete it or choose another cache file",
                                      file, stored, key));
  }
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty()) continue;
    std::istringstream row(line);
    int64_t index = -1;
    std::string value_text, extra;
    if (!(row >> index >> value_text) || (row >> extra) || index < 0) fail(fmt::format("bad entry '{}'", line));
    errno = 0;
    char* end = nullptr;
    const double value = std::strtod(value_text.c_str(), &end);
    if (end != value_text.c_str() + value_text.size() || errno != 0 || !std::isfinite(value))
      fail(fmt::format("bad value '{}'", value_text));
    if (!entries.emplace(index, value).second) fail(fmt::format("evaluation {} listed twice", index));
  }
  return entries;
}

void save_clado_cache(const std::filesystem::path& path, uint64_t key, const std::map<int64_t, double>& entries) {
  std::string text = fmt::format("{} {}\nkey {:016x}\n", kMagic, kVersion, key);
  char buffer[64];
  for (const auto& [index, value] : entries) {
    std::snprintf(buffer, sizeof buffer, "%a", value);
    text += fmt::format("{} {}\n", index, buffer);
  }
  write_file_atomic(path, text);
}

}  // namespace bitmix::search::detail
