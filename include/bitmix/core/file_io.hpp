#pragma once
// File helpers shared by every reader and writer: whole-file reads with clear errors, and
// atomic writes (a temporary file renamed into place on commit, removed otherwise), so a
// failed or interrupted write never leaves a half-written output behind.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bitmix {

// Reads a whole file. Throws IoError naming the path if it is missing or unreadable.
std::vector<uint8_t> read_file_bytes(const std::filesystem::path& path);
std::string read_file_text(const std::filesystem::path& path);

// Writes to "<path>.tmp-<pid>-<n>-<stamp>" in the same directory; commit() flushes the data to
// the disk (fsync), closes and renames it onto `path`, then syncs the directory. So at every
// instant, even if the process is killed (SIGKILL) or the machine loses power, `path` holds
// either its complete old content or the complete new one. If commit() is never reached (an
// exception, an early return) the destructor deletes the temporary file; a temporary left by a
// killed process is deleted by the next successful commit() to the same path (its process id
// names a process that no longer exists). Parent directories are created.
//
// Every failure (no space, a file size limit, a read-only directory) throws IoError naming
// `path` and the system's reason, and leaves the previous file untouched. (A process that sets
// an RLIMIT_FSIZE should ignore SIGXFSZ, as the bitmix tool does, to get that error instead of
// being killed by the signal.)
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Throws IoError at the first failed write (the temporary is removed by the destructor).
  void write(std::span<const uint8_t> bytes);
  void write(std::string_view text);
  // Throws IoError if the data cannot be made durable or the rename fails.
  void commit();

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temp_path() const { return temp_path_; }

 private:
  void write_raw(const char* data, std::size_t size);

  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// The temporary files AtomicFileWriter left beside `path` (killed writers); with
// `only_dead_writers`, only those whose writing process no longer exists.
std::vector<std::filesystem::path> atomic_write_leftovers(const std::filesystem::path& path,
                                                          bool only_dead_writers = true);

// Convenience: atomically replace `path` with `text`.
void write_file_atomic(const std::filesystem::path& path, std::string_view text);
void write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> bytes);

// CRC-32 (IEEE 802.3, the zlib/PNG polynomial). `crc` continues a previous value.
uint32_t crc32(std::span<const uint8_t> bytes, uint32_t crc = 0);

}  // namespace bitmix
