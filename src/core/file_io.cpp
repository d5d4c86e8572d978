#include "bitmix/core/file_io.hpp"

#include <fstream>

#include <fmt/format.h>
#include <fmt/std.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
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

namespace {

constexpr std::string_view kTempMarker = ".tmp-";

std::string errno_text(int error) { return std::strerror(error); }

// The reason of a failed write, with a hint where the system's words are terse.
std::string write_failure(int error) {
  if (error == ENOSPC) return "no space left on the device";
  if (error == EFBIG) return "file too large (a file size limit, ulimit -f, or the file system's maximum)";
  if (error == EDQUOT) return "disk quota exceeded";
  return errno_text(error);
}

// Flushes a directory's entries (the rename) to the disk; a failure here is not an error of the
// write (some file systems refuse fsync on directories), the file itself is already durable.
void sync_directory(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// The process id in "<name>.tmp-<pid>-<n>-<stamp>", or 0 if `entry` is not such a name for `name`.
pid_t leftover_pid(const std::string& entry, const std::string& name) {
  const std::string prefix = name + std::string(kTempMarker);
  if (entry.size() <= prefix.size() || entry.compare(0, prefix.size(), prefix) != 0) return 0;
  long long pid = 0;
  std::size_t i = prefix.size();
  for (; i < entry.size() && entry[i] >= '0' && entry[i] <= '9' && pid < (1LL << 31); ++i) pid = pid * 10 + (entry[i] - '0');
  if (i == prefix.size() || i >= entry.size() || entry[i] != '-' || pid <= 0 || pid >= (1LL << 31)) return 0;
  return static_cast<pid_t>(pid);
}

bool process_exists(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

std::vector<fs::path> atomic_write_leftovers(const fs::path& path, bool only_dead_writers) {
  std::vector<fs::path> found;
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  const std::string name = path.filename().string();
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const pid_t pid = leftover_pid(it->path().filename().string(), name);
    if (pid == 0) continue;
    if (only_dead_writers && (pid == ::getpid() || process_exists(pid))) continue;
    found.push_back(it->path());
  }
  return found;
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
  temp_path_ += fmt::format("{}{}-{}-{:04x}", kTempMarker, ::getpid(), counter.fetch_add(1), stamp & 0xffff);
  // O_EXCL: never write into a file another writer is using (or a link planted there).
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd_ < 0)
    throw IoError(fmt::format("{}: cannot create {} for writing: {}", path_.string(), temp_path_.string(),
                              errno_text(errno)));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (committed_) return;
  if (fd_ >= 0) ::close(fd_);
  ::unlink(temp_path_.c_str());
}

void AtomicFileWriter::write_raw(const char* data, std::size_t size) {
  if (fd_ < 0) throw IoError(fmt::format("{}: write after the file was committed or failed", path_.string()));
  while (size > 0) {
    const ssize_t n = ::write(fd_, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // A short write of 0 bytes is how some file systems report a full disk.
      const int error = n < 0 ? errno : ENOSPC;
      ::close(fd_);
      fd_ = -1;
      throw IoError(fmt::format("{}: write failed: {}; the previous file (if any) is unchanged", path_.string(),
                                write_failure(error)));
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

void AtomicFileWriter::write(std::span<const uint8_t> bytes) {
  write_raw(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void AtomicFileWriter::write(std::string_view text) { write_raw(text.data(), text.size()); }

void AtomicFileWriter::commit() {
  if (committed_) return;
  if (fd_ < 0) throw IoError(fmt::format("{}: commit after a failed write", path_.string()));
  // The data must be on the disk before the rename makes it the file's content: otherwise a
  // power loss right after the rename can leave an empty or partial file under the final name.
  if (::fsync(fd_) != 0 && errno != EINVAL && errno != EROFS) {
    const int error = errno;
    ::close(fd_);
    fd_ = -1;
    throw IoError(fmt::format("{}: write failed: {}; the previous file (if any) is unchanged", path_.string(),
                              write_failure(error)));
  }
  const int closed = ::close(fd_);
  const int close_error = errno;
  fd_ = -1;
  if (closed != 0 && close_error != EINTR)
    throw IoError(fmt::format("{}: write failed: {}; the previous file (if any) is unchanged", path_.string(),
                              write_failure(close_error)));
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
    throw IoError(fmt::format("{}: cannot move the finished file into place: {}", path_.string(), errno_text(errno)));
  committed_ = true;
  sync_directory(path_.parent_path());
  // Temporaries of writers that were killed before their commit (a crash, SIGKILL): nobody
  // else will ever remove them.
  for (const fs::path& leftover : atomic_write_leftovers(path_)) {
    std::error_code ec;
    fs::remove(leftover, ec);
  }
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
