#include "bitmix/runtime/bmx_file.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"

namespace bitmix::runtime {
namespace {

// Layout constants: docs/bmx-format.md.
constexpr char kMagic[8] = {'B', 'M', 'X', 'M', 'O', 'D', 'E', 'L'};
constexpr uint32_t kHeaderSize = 128;
constexpr uint32_t kSectionCount = 3;
// Bytes 104..123 of the header are reserved (0); 32 + 3 section entries of 24 bytes end at 104.
constexpr std::size_t kReservedTailOffset = 32 + 3 * 24;
static_assert(kReservedTailOffset + 20 + 4 == kHeaderSize, "reserved tail, then the header CRC, end the header");
constexpr uint32_t kMetadataSection = 1, kTableSection = 2, kDataSection = 3;
constexpr uint64_t kDataAlignment = 64;
constexpr std::size_t kMaxRank = 8;
constexpr uint32_t kMaxStringBytes = 1u << 20;

enum class MetaType : uint8_t { string = 1, int64 = 2, real = 3, strings = 4, ints = 5, reals = 6 };

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// ---- Little-endian writer.
class ByteWriter {
 public:
  std::vector<uint8_t> bytes;
  template <typename T>
  void put(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    uint8_t raw[sizeof(T)];
    std::memcpy(raw, &value, sizeof(T));
    if constexpr (std::endian::native == std::endian::big) std::reverse(raw, raw + sizeof(T));
    bytes.insert(bytes.end(), raw, raw + sizeof(T));
  }
  void put_string32(const std::string& s) {
    put<uint32_t>(static_cast<uint32_t>(s.size()));
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  void put_name16(const std::string& s) {
    put<uint16_t>(static_cast<uint16_t>(s.size()));
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
};

// ---- Bounded little-endian reader: every read is checked against the section's end.
class ByteReader {
 public:
  ByteReader(std::span<const uint8_t> bytes, const std::string& source, std::string section)
      : bytes_(bytes), source_(source), section_(std::move(section)) {}

  void need(uint64_t n, std::string_view what) const {
    if (n > bytes_.size() - pos_)
      throw FormatError(fmt::format("{}: {} section truncated: {} needs {} bytes at offset {}, {} remain", source_,
                                    section_, what, n, pos_, bytes_.size() - pos_));
  }
  template <typename T>
  T get(std::string_view what) {
    need(sizeof(T), what);
    uint8_t raw[sizeof(T)];
    std::memcpy(raw, bytes_.data() + pos_, sizeof(T));
    if constexpr (std::endian::native == std::endian::big) std::reverse(raw, raw + sizeof(T));
    pos_ += sizeof(T);
    T value;
    std::memcpy(&value, raw, sizeof(T));
    return value;
  }
  std::string get_bytes(uint64_t n, std::string_view what) {
    need(n, what);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  std::string get_string32(std::string_view what) {
    const uint32_t n = get<uint32_t>(what);
    if (n > kMaxStringBytes)
      throw FormatError(fmt::format("{}: {} section: {} of {} bytes exceeds the {}-byte limit", source_, section_,
                                    what, n, kMaxStringBytes));
    return get_bytes(n, what);
  }
  std::string get_name16(std::string_view what) {
    const uint16_t n = get<uint16_t>(what);
    if (n == 0) throw FormatError(fmt::format("{}: {} section: empty {}", source_, section_, what));
    return get_bytes(n, what);
  }
  // A count of items each at least `min_item_bytes` long: bounded by what remains.
  uint32_t get_count(uint64_t min_item_bytes, std::string_view what) {
    const uint32_t n = get<uint32_t>(what);
    if (static_cast<uint64_t>(n) * min_item_bytes > bytes_.size() - pos_)
      throw FormatError(fmt::format("{}: {} section: {} {} cannot fit in the {} bytes that remain", source_,
                                    section_, n, what, bytes_.size() - pos_));
    return n;
  }
  bool at_end() const { return pos_ == bytes_.size(); }
  uint64_t position() const { return pos_; }

 private:
  std::span<const uint8_t> bytes_;
  uint64_t pos_ = 0;
  const std::string& source_;
  std::string section_;
};

}  // namespace

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::u8: return "u8";
    case DType::i8: return "i8";
    case DType::i32: return "i32";
    case DType::u32: return "u32";
    case DType::f32: return "f32";
    case DType::u64: return "u64";
  }
  return "unknown";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::u8:
    case DType::i8: return 1;
    case DType::i32:
    case DType::u32:
    case DType::f32: return 4;
    case DType::u64: return 8;
  }
  return 0;
}

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------- writing

void BmxWriter::set(const std::string& key, MetaValue value) {
  if (key.empty() || key.size() > 255) throw ArgumentError(fmt::format("metadata key '{}': 1 to 255 bytes", key));
  metadata_[key] = std::move(value);
}

void BmxWriter::add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                           std::span<const uint8_t> bytes) {
  if (name.empty() || name.size() > 1024) throw ArgumentError(fmt::format("tensor name '{}': 1 to 1024 bytes", name));
  if (shape.size() > kMaxRank) throw ArgumentError(fmt::format("tensor {}: rank {} > {}", name, shape.size(), kMaxRank));
  for (const Pending& t : tensors_)
    if (t.name == name) throw ArgumentError(fmt::format("tensor {} added twice", name));
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) throw ArgumentError(fmt::format("tensor {}: negative extent {}", name, d));
    numel *= static_cast<uint64_t>(d);
  }
  if (numel * dtype_size(dtype) != bytes.size())
    throw ArgumentError(fmt::format("tensor {}: {} bytes for {} elements of {}", name, bytes.size(), numel,
                                    dtype_name(dtype)));
  tensors_.push_back({name, dtype, std::move(shape), std::vector<uint8_t>(bytes.begin(), bytes.end())});
}

void BmxWriter::add_tensor(const std::string& name, std::span<const float> values, std::vector<int64_t> shape) {
  add_tensor(name, DType::f32, std::move(shape),
             {reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float)});
}

void BmxWriter::add_tensor(const std::string& name, std::span<const int32_t> values, std::vector<int64_t> shape) {
  add_tensor(name, DType::i32, std::move(shape),
             {reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(int32_t)});
}

std::vector<uint8_t> BmxWriter::serialize() const {
  static_assert(std::endian::native == std::endian::little,
                "tensor payloads are copied as-is; a big-endian port must byte-swap them");
  ByteWriter meta;
  meta.put<uint32_t>(static_cast<uint32_t>(metadata_.size()));
  for (const auto& [key, value] : metadata_) {
    meta.put_name16(key);
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string>) {
            meta.put<uint8_t>(static_cast<uint8_t>(MetaType::string));
            meta.put_string32(v);
          } else if constexpr (std::is_same_v<T, int64_t>) {
            meta.put<uint8_t>(static_cast<uint8_t>(MetaType::int64));
            meta.put<int64_t>(v);
          } else if constexpr (std::is_same_v<T, double>) {
            meta.put<uint8_t>(static_cast<uint8_t>(MetaType::real));
            meta.put<double>(v);
          } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            meta.put<uint8_t>(static_cast<uint8_t>(MetaType::strings));
            meta.put<uint32_t>(static_cast<uint32_t>(v.size()));
            for (const std::string& s : v) meta.put_string32(s);
          } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
            meta.put<uint8_t>(static_cast<uint8_t>(MetaType::ints));
            meta.put<uint32_t>(static_cast<uint32_t>(v.size()));
            for (int64_t x : v) meta.put<int64_t>(x);
          } else {
            meta.put<uint8_t>(static_cast<uint8_t>(MetaType::reals));
            meta.put<uint32_t>(static_cast<uint32_t>(v.size()));
            for (double x : v) meta.put<double>(x);
          }
        },
        value);
  }

  ByteWriter table;
  table.put<uint32_t>(static_cast<uint32_t>(tensors_.size()));
  uint64_t data_size = 0;
  for (const Pending& t : tensors_) {
    table.put_name16(t.name);
    table.put<uint8_t>(static_cast<uint8_t>(t.dtype));
    table.put<uint8_t>(static_cast<uint8_t>(t.shape.size()));
    for (int64_t d : t.shape) table.put<int64_t>(d);
    data_size = align_up(data_size, kDataAlignment);
    table.put<uint64_t>(data_size);
    table.put<uint64_t>(t.bytes.size());
    data_size += t.bytes.size();
  }

  const uint64_t meta_offset = kHeaderSize;
  const uint64_t table_offset = meta_offset + meta.bytes.size();
  const uint64_t data_offset = align_up(table_offset + table.bytes.size(), kDataAlignment);
  const uint64_t file_size = data_offset + data_size;

  std::vector<uint8_t> file(file_size, 0);
  std::copy(meta.bytes.begin(), meta.bytes.end(), file.begin() + static_cast<std::ptrdiff_t>(meta_offset));
  std::copy(table.bytes.begin(), table.bytes.end(), file.begin() + static_cast<std::ptrdiff_t>(table_offset));
  uint64_t cursor = 0;
  for (const Pending& t : tensors_) {
    cursor = align_up(cursor, kDataAlignment);
    std::copy(t.bytes.begin(), t.bytes.end(), file.begin() + static_cast<std::ptrdiff_t>(data_offset + cursor));
    cursor += t.bytes.size();
  }

  ByteWriter header;
  header.bytes.insert(header.bytes.end(), kMagic, kMagic + 8);
  header.put<uint32_t>(kBmxVersion);
  header.put<uint32_t>(kHeaderSize);
  header.put<uint64_t>(file_size);
  header.put<uint32_t>(kSectionCount);
  header.put<uint32_t>(0);
  const std::span<const uint8_t> all(file);
  auto section = [&](uint32_t kind, uint64_t offset, uint64_t size) {
    header.put<uint32_t>(kind);
    header.put<uint32_t>(crc32(all.subspan(offset, size)));
    header.put<uint64_t>(offset);
    header.put<uint64_t>(size);
  };
  section(kMetadataSection, meta_offset, meta.bytes.size());
  section(kTableSection, table_offset, table.bytes.size());
  section(kDataSection, data_offset, data_size);
  header.bytes.resize(kHeaderSize - 4, 0);
  header.put<uint32_t>(crc32(header.bytes));
  std::copy(header.bytes.begin(), header.bytes.end(), file.begin());
  return file;
}

void BmxWriter::write(const std::filesystem::path& path) const {
  const std::vector<uint8_t> bytes = serialize();
  write_file_atomic(path, bytes);
}

// ---------------------------------------------------------------- reading

BmxFile BmxFile::load(const std::filesystem::path& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return parse(bytes, path.string());
}

BmxFile BmxFile::parse(std::span<const uint8_t> bytes, std::string source) {
  BmxFile file;
  file.source_ = std::move(source);
  const std::string& src = file.source_;
  if (bytes.size() < kHeaderSize)
    throw FormatError(fmt::format("{}: {} bytes, too short for the {}-byte .bmx header (truncated?)", src,
                                  bytes.size(), kHeaderSize));
  if (std::memcmp(bytes.data(), kMagic, 8) != 0)
    throw FormatError(fmt::format("{}: not a .bmx model (wrong magic; expected \"BMXMODEL\")", src));
  ByteReader header(bytes.first(kHeaderSize), src, "header");
  header.get_bytes(8, "magic");
  file.version_ = header.get<uint32_t>("version");
  if (file.version_ != kBmxVersion)
    throw FormatError(fmt::format("{}: .bmx version {}, this bitmix reads version {}", src, file.version_,
                                  kBmxVersion));
  const uint32_t header_size = header.get<uint32_t>("header size");
  const uint64_t file_size = header.get<uint64_t>("file size");
  const uint32_t section_count = header.get<uint32_t>("section count");
  const uint32_t reserved = header.get<uint32_t>("reserved");
  uint32_t stored_header_crc = 0;
  std::memcpy(&stored_header_crc, bytes.data() + kHeaderSize - 4, 4);
  if (crc32(bytes.first(kHeaderSize - 4)) != stored_header_crc)
    throw FormatError(fmt::format("{}: header checksum mismatch (the file is corrupt)", src));
  // Reserved fields are 0 in version 1: a non-zero value is a file from a newer writer that
  // uses them, whose meaning this reader would silently ignore.
  if (reserved != 0)
    throw FormatError(fmt::format("{}: reserved header field at byte 28 is {}, expected 0", src, reserved));
  for (std::size_t i = kReservedTailOffset; i < kHeaderSize - 4; ++i)
    if (bytes[i] != 0)
      throw FormatError(fmt::format("{}: reserved header byte {} is {}, expected 0", src, i, bytes[i]));
  if (header_size != kHeaderSize)
    throw FormatError(fmt::format("{}: header size {}, expected {}", src, header_size, kHeaderSize));
  if (file_size != bytes.size())
    throw FormatError(fmt::format("{}: the header records {} bytes but the file has {} ({})", src, file_size,
                                  bytes.size(), file_size > bytes.size() ? "truncated" : "trailing data"));
  if (section_count != kSectionCount)
    throw FormatError(fmt::format("{}: {} sections, expected {}", src, section_count, kSectionCount));

  struct Section {
    uint64_t offset, size;
  } sections[4] = {};
  const char* names[4] = {"", "metadata", "tensor table", "tensor data"};
  uint64_t previous_end = kHeaderSize;
  for (uint32_t i = 0; i < kSectionCount; ++i) {
    const uint32_t kind = header.get<uint32_t>("section kind");
    const uint32_t crc = header.get<uint32_t>("section checksum");
    const uint64_t offset = header.get<uint64_t>("section offset");
    const uint64_t size = header.get<uint64_t>("section size");
    if (kind != i + 1) throw FormatError(fmt::format("{}: section {} has kind {}, expected {}", src, i, kind, i + 1));
    if (offset < previous_end || offset > bytes.size() || size > bytes.size() - offset)
      throw FormatError(fmt::format("{}: {} section [{}, +{}) lies outside the file or overlaps the previous one",
                                    src, names[kind], offset, size));
    if (kind == kDataSection && offset % kDataAlignment != 0)
      throw FormatError(fmt::format("{}: tensor data starts at {}, not a multiple of {}", src, offset, kDataAlignment));
    if (crc32(bytes.subspan(offset, size)) != crc)
      throw FormatError(fmt::format("{}: {} section checksum mismatch (the file is corrupt)", src, names[kind]));
    sections[kind] = {offset, size};
    previous_end = offset + size;
  }

  // Metadata.
  ByteReader meta(bytes.subspan(sections[kMetadataSection].offset, sections[kMetadataSection].size), src, "metadata");
  const uint32_t entries = meta.get_count(4, "metadata entries");
  for (uint32_t e = 0; e < entries; ++e) {
    std::string key = meta.get_name16("metadata key");
    const auto type = static_cast<MetaType>(meta.get<uint8_t>("metadata type"));
    MetaValue value;
    switch (type) {
      case MetaType::string: value = meta.get_string32(key); break;
      case MetaType::int64: value = meta.get<int64_t>(key); break;
      case MetaType::real: value = meta.get<double>(key); break;
      case MetaType::strings: {
        std::vector<std::string> list(meta.get_count(4, key));
        for (std::string& s : list) s = meta.get_string32(key);
        value = std::move(list);
        break;
      }
      case MetaType::ints: {
        std::vector<int64_t> list(meta.get_count(8, key));
        for (int64_t& x : list) x = meta.get<int64_t>(key);
        value = std::move(list);
        break;
      }
      case MetaType::reals: {
        std::vector<double> list(meta.get_count(8, key));
        for (double& x : list) x = meta.get<double>(key);
        value = std::move(list);
        break;
      }
      default:
        throw FormatError(fmt::format("{}: metadata '{}' has unknown type {}", src, key, static_cast<int>(type)));
    }
    if (!file.metadata_.emplace(key, std::move(value)).second)
      throw FormatError(fmt::format("{}: metadata key '{}' appears twice", src, key));
  }
  if (!meta.at_end()) throw FormatError(fmt::format("{}: metadata section has trailing bytes", src));

  // Tensor table, checked against the data section before anything points into it.
  file.storage_.assign(bytes.begin() + static_cast<std::ptrdiff_t>(sections[kDataSection].offset),
                       bytes.begin() + static_cast<std::ptrdiff_t>(sections[kDataSection].offset +
                                                                    sections[kDataSection].size));
  const uint64_t data_size = sections[kDataSection].size;
  ByteReader table(bytes.subspan(sections[kTableSection].offset, sections[kTableSection].size), src, "tensor table");
  const uint32_t count = table.get_count(2 + 1 + 1 + 8 + 8 + 1, "tensors");
  std::vector<std::pair<uint64_t, uint64_t>> extents;
  for (uint32_t t = 0; t < count; ++t) {
    TensorEntry entry;
    entry.name = table.get_name16("tensor name");
    const uint8_t dtype = table.get<uint8_t>("dtype");
    if (dtype < 1 || dtype > 6)
      throw FormatError(fmt::format("{}: tensor {} has unknown dtype {}", src, entry.name, dtype));
    entry.dtype = static_cast<DType>(dtype);
    const uint8_t rank = table.get<uint8_t>("rank");
    if (rank > kMaxRank) throw FormatError(fmt::format("{}: tensor {} has rank {} > {}", src, entry.name, rank, kMaxRank));
    uint64_t numel = 1;
    for (uint8_t d = 0; d < rank; ++d) {
      const int64_t extent = table.get<int64_t>("tensor extent");
      uint64_t product = 0;
      if (extent < 0 || __builtin_mul_overflow(numel, static_cast<uint64_t>(extent), &product))
        throw FormatError(fmt::format("{}: tensor {} has an impossible extent {}", src, entry.name, extent));
      numel = product;
      entry.shape.push_back(extent);
    }
    const uint64_t offset = table.get<uint64_t>("tensor offset");
    const uint64_t size = table.get<uint64_t>("tensor size");
    if (numel > data_size || numel * dtype_size(entry.dtype) != size)
      throw FormatError(fmt::format("{}: tensor {} records {} bytes for {} elements of {}", src, entry.name, size,
                                    numel, dtype_name(entry.dtype)));
    if (offset % kDataAlignment != 0 || offset > data_size || size > data_size - offset)
      throw FormatError(fmt::format("{}: tensor {} at [{}, +{}) is misaligned or outside the {}-byte data section",
                                    src, entry.name, offset, size, data_size));
    for (const TensorEntry& other : file.tensors_)
      if (other.name == entry.name) throw FormatError(fmt::format("{}: tensor {} appears twice", src, entry.name));
    extents.emplace_back(offset, size);
    entry.bytes = std::span<const uint8_t>(file.storage_.data() + offset, size);
    file.tensors_.push_back(std::move(entry));
  }
  if (!table.at_end()) throw FormatError(fmt::format("{}: tensor table has trailing bytes", src));
  std::sort(extents.begin(), extents.end());
  for (std::size_t i = 1; i < extents.size(); ++i)
    if (extents[i].first < extents[i - 1].first + extents[i - 1].second)
      throw FormatError(fmt::format("{}: two tensors overlap in the data section", src));
  return file;
}

bool BmxFile::has(std::string_view key) const { return metadata_.find(key) != metadata_.end(); }

namespace {
template <typename T>
const T& typed(const std::map<std::string, MetaValue, std::less<>>& metadata, std::string_view key,
               const std::string& source, std::string_view type_name) {
  const auto it = metadata.find(key);
  if (it == metadata.end()) throw FormatError(fmt::format("{}: metadata '{}' is missing", source, key));
  const T* value = std::get_if<T>(&it->second);
  if (value == nullptr) throw FormatError(fmt::format("{}: metadata '{}' is not {}", source, key, type_name));
  return *value;
}
}  // namespace

const std::string& BmxFile::get_string(std::string_view key) const {
  return typed<std::string>(metadata_, key, source_, "a string");
}
int64_t BmxFile::get_int(std::string_view key) const { return typed<int64_t>(metadata_, key, source_, "an integer"); }
double BmxFile::get_real(std::string_view key) const { return typed<double>(metadata_, key, source_, "a number"); }
const std::vector<std::string>& BmxFile::get_strings(std::string_view key) const {
  return typed<std::vector<std::string>>(metadata_, key, source_, "a list of strings");
}
const std::vector<int64_t>& BmxFile::get_ints(std::string_view key) const {
  return typed<std::vector<int64_t>>(metadata_, key, source_, "a list of integers");
}
const std::vector<double>& BmxFile::get_reals(std::string_view key) const {
  return typed<std::vector<double>>(metadata_, key, source_, "a list of numbers");
}

bool BmxFile::has_tensor(std::string_view name) const {
  return std::any_of(tensors_.begin(), tensors_.end(), [&](const TensorEntry& t) { return t.name == name; });
}

const TensorEntry& BmxFile::tensor(std::string_view name) const {
  for (const TensorEntry& t : tensors_)
    if (t.name == name) return t;
  throw FormatError(fmt::format("{}: tensor {} is missing", source_, name));
}

const TensorEntry& BmxFile::tensor(std::string_view name, DType dtype, const std::vector<int64_t>& shape) const {
  const TensorEntry& t = tensor(name);
  if (t.dtype != dtype)
    throw FormatError(fmt::format("{}: tensor {} is {}, expected {}", source_, name, dtype_name(t.dtype),
                                  dtype_name(dtype)));
  if (!shape.empty() && t.shape != shape)
    throw FormatError(fmt::format("{}: tensor {} has shape [{}], expected [{}]", source_, name,
                                  fmt::join(t.shape, ", "), fmt::join(shape, ", ")));
  return t;
}

std::vector<float> BmxFile::floats(std::string_view name, const std::vector<int64_t>& shape) const {
  const TensorEntry& t = tensor(name, DType::f32, shape);
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  return out;
}

std::vector<int32_t> BmxFile::ints(std::string_view name, const std::vector<int64_t>& shape) const {
  const TensorEntry& t = tensor(name, DType::i32, shape);
  std::vector<int32_t> out(static_cast<std::size_t>(t.numel()));
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  return out;
}

}  // namespace bitmix::runtime
