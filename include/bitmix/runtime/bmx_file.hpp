#pragma once
// The .bmx container: a versioned, little-endian file with typed metadata and a table of named
// tensors whose data is 64-byte aligned, each section protected by a CRC-32. The layout is
// specified in docs/bmx-format.md. The runtime's integer model is stored in it (model.hpp); the
// container itself knows nothing of networks.
//
// Reading is strict: every size, count, offset and checksum is validated before use, so a
// corrupt, truncated or oversized file raises bitmix::FormatError (naming the file and the
// field at fault) and never causes an out-of-bounds read. Writing is atomic.

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bitmix/core/aligned.hpp"
#include "bitmix/core/tensor.hpp"

namespace bitmix::runtime {

inline constexpr uint32_t kBmxVersion = 1;

enum class DType : uint8_t { u8 = 1, i8 = 2, i32 = 3, u32 = 4, f32 = 5, u64 = 6 };
std::string_view dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);

// A metadata value: text, integer, real, or a list of one of those.
using MetaValue = std::variant<std::string, int64_t, double, std::vector<std::string>, std::vector<int64_t>,
                               std::vector<double>>;

struct TensorEntry {
  std::string name;
  DType dtype = DType::u8;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;  // 64-byte aligned when read from a BmxFile
  int64_t numel() const;
};

class BmxWriter {
 public:
  void set(const std::string& key, MetaValue value);
  // Copies the data. Throws ArgumentError on a duplicate name or a byte count that does not
  // match shape and dtype.
  void add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, std::span<const uint8_t> bytes);
  void add_tensor(const std::string& name, std::span<const float> values, std::vector<int64_t> shape);
  void add_tensor(const std::string& name, std::span<const int32_t> values, std::vector<int64_t> shape);
  // Serializes; write() stores it atomically (temporary file + rename).
  std::vector<uint8_t> serialize() const;
  void write(const std::filesystem::path& path) const;

 private:
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, MetaValue> metadata_;
  std::vector<Pending> tensors_;
};

class BmxFile {
 public:
  // Reads and validates the whole file.
  static BmxFile load(const std::filesystem::path& path);
  // Validates bytes held in memory; `source` names them in errors.
  static BmxFile parse(std::span<const uint8_t> bytes, std::string source);

  const std::string& source() const { return source_; }
  uint32_t version() const { return version_; }

  bool has(std::string_view key) const;
  // Typed access; FormatError naming the key when it is missing or of another type.
  const std::string& get_string(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  double get_real(std::string_view key) const;
  const std::vector<std::string>& get_strings(std::string_view key) const;
  const std::vector<int64_t>& get_ints(std::string_view key) const;
  const std::vector<double>& get_reals(std::string_view key) const;
  const std::map<std::string, MetaValue, std::less<>>& metadata() const { return metadata_; }

  bool has_tensor(std::string_view name) const;
  // FormatError naming the tensor when missing, of another dtype, or of another shape
  // (an empty `shape` accepts any).
  const TensorEntry& tensor(std::string_view name) const;
  const TensorEntry& tensor(std::string_view name, DType dtype, const std::vector<int64_t>& shape = {}) const;
  std::vector<float> floats(std::string_view name, const std::vector<int64_t>& shape = {}) const;
  std::vector<int32_t> ints(std::string_view name, const std::vector<int64_t>& shape = {}) const;
  const std::vector<TensorEntry>& tensors() const { return tensors_; }

 private:
  std::string source_;
  uint32_t version_ = 0;
  AlignedVector<uint8_t> storage_;
  std::map<std::string, MetaValue, std::less<>> metadata_;
  std::vector<TensorEntry> tensors_;
};

}  // namespace bitmix::runtime
