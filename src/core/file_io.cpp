#include "bitmix/core/file_io.hpp"

#include <fmt/format.h>
#include <fmt/std.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>
#include <unistd.h>

#include "bitmix/core/error.hpp"

namespace bitmix {
namespace fs = std::filesystem;

std::vector<uint8_t> read_file_bytes(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw IoError(fmt::format("{}: no such file", path.string()));
  if (fs::is_directory(path, ec)) throw IoError(fmt::format("{}: is a directory, expected a file", path.string()));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open for reading: {}", path.string(), std::strerror(errno)));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw IoError(fmt::format("{}: cannot determine the file size", path.string()));
  in.seekg(0, std::ios::beg);
  std::vector<uint8_t> bytes(static_cast<std::size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
    throw IoError(fmt::format("{}: read failed after {} of {} bytes", path.string(), in.gcount(), size));
  return bytes;
}

std::string read_file_text(const fs::path& path) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

AtomicFileWriter::AtomicFileWriter(fs::path path) : path_(std::move(path)) {
  static std::atomic<unsigned> counter{0};
  std::error_code ec;
  if (path_.has_parent_path()) {
    fs::create_directories(path_.parent_path(), ec);
    if (ec)
      throw IoError(fmt::format("{}: cannot create directory {}: {}", path_.string(),
                                path_.parent_path().string(), ec.message()));
  }
  const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
  temp_path_ = path_;
  temp_path_ += fmt::format(".tmp-{}-{}-{}", ::getpid(), counter.fetch_add(1), stamp & 0xffff);
  out_.open(temp_path_, std::ios::binary | std::ios::trunc);
  if (!out_)
    throw IoError(fmt::format("{}: cannot open {} for writing: {}", path_.string(), temp_path_.string(),
                              std::strerror(errno)));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (committed_) return;
  out_.close();
  std::error_code ec;
  fs::remove(temp_path_, ec);
}

void AtomicFileWriter::write(std::span<const uint8_t> bytes) {
  out_.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void AtomicFileWriter::write(std::string_view text) {
  out_.write(text.data(), static_cast<std::streamsize>(text.size()));
}

void AtomicFileWriter::commit() {
  if (committed_) return;
  out_.flush();
  const bool ok = static_cast<bool>(out_);
  out_.close();
  if (!ok || out_.fail()) throw IoError(fmt::format("{}: write failed (disk full?)", path_.string()));
  std::error_code ec;
  fs::rename(temp_path_, path_, ec);
  if (ec) throw IoError(fmt::format("{}: cannot move the finished file into place: {}", path_.string(), ec.message()));
  committed_ = true;
}

void write_file_atomic(const fs::path& path, std::string_view text) {
  AtomicFileWriter writer(path);
  writer.write(text);
  writer.commit();
}

void write_file_atomic(const fs::path& path, std::span<const uint8_t> bytes) {
  AtomicFileWriter writer(path);
  writer.write(bytes);
  writer.commit();
}

namespace {
constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();
}  // namespace

uint32_t crc32(std::span<const uint8_t> bytes, uint32_t crc) {
  crc = ~crc;
  for (uint8_t b : bytes) crc = kCrcTable[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

}  // namespace bitmix
