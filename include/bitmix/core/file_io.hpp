#pragma once
// File helpers shared by every reader and writer: whole-file reads with clear errors, and
// atomic writes (a temporary file renamed into place on commit, removed otherwise), so a
// failed or interrupted write never leaves a half-written output behind.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bitmix {

// Reads a whole file. Throws IoError naming the path if it is missing or unreadable.
std::vector<uint8_t> read_file_bytes(const std::filesystem::path& path);
std::string read_file_text(const std::filesystem::path& path);

// Writes to "<path>.tmp-<random>" in the same directory; commit() flushes, closes and renames
// it onto `path`. If commit() is never reached (an exception, an early return) the destructor
// deletes the temporary file. Parent directories are created.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  std::ostream& stream() { return out_; }
  void write(std::span<const uint8_t> bytes);
  void write(std::string_view text);
  // Throws IoError if any write failed or the rename fails.
  void commit();

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  std::ofstream out_;
  bool committed_ = false;
};

// Convenience: atomically replace `path` with `text`.
void write_file_atomic(const std::filesystem::path& path, std::string_view text);
void write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> bytes);

// CRC-32 (IEEE 802.3, the zlib/PNG polynomial). `crc` continues a previous value.
uint32_t crc32(std::span<const uint8_t> bytes, uint32_t crc = 0);

}  // namespace bitmix
