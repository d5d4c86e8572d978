// Checkpoint file format v1 (all integers little-endian; see docs/training.md):
//
//   header (64 bytes)
//     0  char[8] magic "BMXCKPT\0"     8  u32 version          12 u32 header size (64)
//     16 u64 file size                 24 u64 metadata offset  32 u64 metadata size
//     40 u64 table offset              48 u64 table size       56 u32 entry count   60 u32 0
//   metadata   UTF-8 JSON text
//   table      per entry: u16 name length, name, u8 kind, u8 rank (<= 8), i64 dims[rank],
//              u64 data offset (absolute, a multiple of 64), u64 data size (4 * elements)
//   data       float32 tensors, each 64-byte aligned, zero padding between them
//   trailer    u32 CRC-32 of every byte before it, char[4] "BMXE"
#include "bitmix/nn/checkpoint.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <set>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"

namespace bitmix::nn {

static_assert(std::endian::native == std::endian::little,
              "checkpoint tensor data is stored little-endian and copied as is");

namespace {

constexpr char kMagic[8] = {'B', 'M', 'X', 'C', 'K', 'P', 'T', '\0'};
constexpr char kTrailerMagic[4] = {'B', 'M', 'X', 'E'};
constexpr uint64_t kHeaderSize = 64;
constexpr uint64_t kTrailerSize = 8;
constexpr uint64_t kAlign = 64;
constexpr int kMaxRank = 8;

uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

class Writer {
 public:
  void u8(uint8_t v) { bytes.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void raw(const void* p, std::size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
  }
  void pad_to(uint64_t size) { bytes.resize(static_cast<std::size_t>(size), 0); }
  void set_u64(std::size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes[at + static_cast<std::size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
  }
  std::vector<uint8_t> bytes;

 private:
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
};

class Reader {
 public:
  Reader(const std::vector<uint8_t>& b, std::string_view source) : bytes_(b), source_(source) {}
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(fmt::format("checkpoint {}: {}", source_, what));
  }
  void seek(uint64_t at) { pos_ = at; }
  uint64_t pos() const { return pos_; }
  void need(uint64_t n, const char* what) const {
    if (pos_ > bytes_.size() || n > bytes_.size() - pos_)
      fail(fmt::format("truncated {} at byte {} (file has {} bytes)", what, pos_, bytes_.size()));
  }
  uint64_t uint(int n, const char* what) {
    need(static_cast<uint64_t>(n), what);
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t{bytes_[static_cast<std::size_t>(pos_) + static_cast<std::size_t>(i)]} << (8 * i);
    pos_ += static_cast<uint64_t>(n);
    return v;
  }
  std::string text(uint64_t n, const char* what) {
    need(n, what);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<std::size_t>(n));
    pos_ += n;
    return s;
  }

 private:
  const std::vector<uint8_t>& bytes_;
  std::string_view source_;
  uint64_t pos_ = 0;
};

}  // namespace

std::string_view checkpoint_kind_name(CheckpointTensorKind kind) {
  switch (kind) {
    case CheckpointTensorKind::parameter: return "parameter";
    case CheckpointTensorKind::buffer: return "buffer";
    case CheckpointTensorKind::optimizer_state: return "optimizer state";
    case CheckpointTensorKind::extra: return "extra";
  }
  return "unknown";
}

const CheckpointEntry* Checkpoint::find(CheckpointTensorKind kind, std::string_view name) const {
  for (const CheckpointEntry& e : entries)
    if (e.kind == kind && e.name == name) return &e;
  return nullptr;
}

void Checkpoint::add(CheckpointTensorKind kind, std::string name, const Tensor& value) {
  entries.push_back({std::move(name), kind, value});
}

std::vector<uint8_t> serialize_checkpoint(const Checkpoint& checkpoint) {
  std::set<std::pair<int, std::string>> seen;
  for (const CheckpointEntry& e : checkpoint.entries) {
    if (e.name.empty() || e.name.size() > 65535)
      throw ArgumentError(fmt::format("checkpoint: entry name '{}' must have 1 to 65535 bytes", e.name));
    if (e.value.rank() > kMaxRank)
      throw ArgumentError(fmt::format("checkpoint: entry '{}' has rank {}, at most {} supported", e.name,
                                      e.value.rank(), kMaxRank));
    if (!seen.insert({static_cast<int>(e.kind), e.name}).second)
      throw ArgumentError(fmt::format("checkpoint: duplicate {} entry '{}'", checkpoint_kind_name(e.kind), e.name));
  }
  const std::string metadata = checkpoint.metadata.empty() ? std::string("{}") : checkpoint.metadata;
  Writer w;
  w.raw(kMagic, sizeof(kMagic));
  w.u32(kCheckpointVersion);
  w.u32(static_cast<uint32_t>(kHeaderSize));
  const std::size_t file_size_at = w.bytes.size();
  w.u64(0);  // file size, patched below
  w.u64(kHeaderSize);
  w.u64(metadata.size());
  const std::size_t table_offset_at = w.bytes.size();
  w.u64(0);
  w.u64(0);
  w.u32(static_cast<uint32_t>(checkpoint.entries.size()));
  w.u32(0);
  w.raw(metadata.data(), metadata.size());

  // Table: data offsets depend on the table size, so lay the table out first.
  uint64_t table_size = 0;
  for (const CheckpointEntry& e : checkpoint.entries)
    table_size += 2 + e.name.size() + 2 + 8 * static_cast<uint64_t>(e.value.rank()) + 16;
  const uint64_t table_offset = w.bytes.size();
  uint64_t data_cursor = align_up(table_offset + table_size);
  std::vector<uint64_t> offsets;
  for (const CheckpointEntry& e : checkpoint.entries) {
    offsets.push_back(data_cursor);
    data_cursor = align_up(data_cursor + e.value.bytes());
  }
  for (std::size_t i = 0; i < checkpoint.entries.size(); ++i) {
    const CheckpointEntry& e = checkpoint.entries[i];
    w.u16(static_cast<uint16_t>(e.name.size()));
    w.raw(e.name.data(), e.name.size());
    w.u8(static_cast<uint8_t>(e.kind));
    w.u8(static_cast<uint8_t>(e.value.rank()));
    for (int64_t d : e.value.shape()) w.u64(static_cast<uint64_t>(d));
    w.u64(offsets[i]);
    w.u64(e.value.bytes());
  }
  w.set_u64(table_offset_at, table_offset);
  w.set_u64(table_offset_at + 8, table_size);
  for (std::size_t i = 0; i < checkpoint.entries.size(); ++i) {
    w.pad_to(offsets[i]);
    w.raw(checkpoint.entries[i].value.data(), checkpoint.entries[i].value.bytes());
  }
  w.pad_to(align_up(w.bytes.size()));
  w.set_u64(file_size_at, w.bytes.size() + kTrailerSize);
  const uint32_t crc = crc32(w.bytes);
  w.u32(crc);
  w.raw(kTrailerMagic, sizeof(kTrailerMagic));
  return std::move(w.bytes);
}

void save_checkpoint(const std::filesystem::path& path, const Checkpoint& checkpoint) {
  write_file_atomic(path, serialize_checkpoint(checkpoint));
}

Checkpoint parse_checkpoint(const std::vector<uint8_t>& bytes, std::string_view source) {
  Reader r(bytes, source);
  if (bytes.size() < kHeaderSize + kTrailerSize)
    r.fail(fmt::format("{} bytes is too short for a checkpoint (header and trailer alone take {})", bytes.size(),
                       kHeaderSize + kTrailerSize));
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) r.fail("not a bitmix checkpoint (bad magic)");
  r.seek(8);
  const uint64_t version = r.uint(4, "version");
  if (version != kCheckpointVersion)
    r.fail(fmt::format("format version {} is not supported (this build reads version {})", version,
                       kCheckpointVersion));
  const uint64_t header_size = r.uint(4, "header size");
  if (header_size != kHeaderSize) r.fail(fmt::format("header size {} (expected {})", header_size, kHeaderSize));
  const uint64_t file_size = r.uint(8, "file size");
  if (file_size != bytes.size())
    r.fail(fmt::format("header says {} bytes but the file has {} (truncated or padded)", file_size, bytes.size()));
  const uint64_t end = file_size - kTrailerSize;
  if (std::memcmp(bytes.data() + end + 4, kTrailerMagic, sizeof(kTrailerMagic)) != 0)
    r.fail("bad trailer (the file is truncated or not a complete checkpoint)");
  const uint32_t stored_crc = static_cast<uint32_t>(bytes[end]) | static_cast<uint32_t>(bytes[end + 1]) << 8 |
                              static_cast<uint32_t>(bytes[end + 2]) << 16 | static_cast<uint32_t>(bytes[end + 3]) << 24;
  const uint32_t actual_crc = crc32(std::span<const uint8_t>(bytes.data(), static_cast<std::size_t>(end)));
  if (stored_crc != actual_crc)
    r.fail(fmt::format("checksum mismatch (stored {:08x}, computed {:08x}): the file is corrupted", stored_crc,
                       actual_crc));
  const uint64_t meta_offset = r.uint(8, "metadata offset");
  const uint64_t meta_size = r.uint(8, "metadata size");
  const uint64_t table_offset = r.uint(8, "table offset");
  const uint64_t table_size = r.uint(8, "table size");
  const uint64_t count = r.uint(4, "entry count");
  // Reserved in version 1: a non-zero value is a newer writer's field this reader would ignore.
  const uint64_t reserved = r.uint(4, "reserved");
  if (reserved != 0) r.fail(fmt::format("reserved header field at byte 60 is {}, expected 0", reserved));
  if (meta_offset != kHeaderSize || meta_size > end - meta_offset)
    r.fail(fmt::format("metadata section [{}, +{}) is outside the file", meta_offset, meta_size));
  if (table_offset != meta_offset + meta_size || table_size > end - table_offset)
    r.fail(fmt::format("table section [{}, +{}) is outside the file or not after the metadata", table_offset,
                       table_size));
  Checkpoint ck;
  r.seek(meta_offset);
  ck.metadata = r.text(meta_size, "metadata");
  const uint64_t data_start = align_up(table_offset + table_size);
  r.seek(table_offset);
  std::set<std::pair<int, std::string>> seen;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (uint64_t i = 0; i < count; ++i) {
    if (r.pos() >= table_offset + table_size) r.fail(fmt::format("table ends after {} of {} entries", i, count));
    const uint64_t name_length = r.uint(2, "entry name length");
    if (name_length == 0) r.fail(fmt::format("entry {} has an empty name", i));
    std::string name = r.text(name_length, "entry name");
    const uint64_t kind = r.uint(1, "entry kind");
    if (kind > static_cast<uint64_t>(CheckpointTensorKind::extra))
      r.fail(fmt::format("entry '{}' has unknown kind {}", name, kind));
    const uint64_t rank = r.uint(1, "entry rank");
    if (rank > kMaxRank) r.fail(fmt::format("entry '{}' has rank {} (at most {})", name, rank, kMaxRank));
    Shape shape;
    for (uint64_t d = 0; d < rank; ++d) {
      const uint64_t extent = r.uint(8, "entry dimension");
      if (extent > (uint64_t{1} << 40)) r.fail(fmt::format("entry '{}' has an implausible extent {}", name, extent));
      shape.push_back(static_cast<int64_t>(extent));
    }
    const uint64_t offset = r.uint(8, "entry data offset");
    const uint64_t size = r.uint(8, "entry data size");
    int64_t numel = 0;
    try {
      numel = shape_numel(shape);
    } catch (const ShapeError&) {
      r.fail(fmt::format("entry '{}' has an invalid shape {}", name, shape_to_string(shape)));
    }
    if (size != static_cast<uint64_t>(numel) * 4)
      r.fail(fmt::format("entry '{}' of shape {} needs {} bytes, the table says {}", name, shape_to_string(shape),
                         numel * 4, size));
    if (offset % kAlign != 0 || offset < data_start || offset > end || size > end - offset)
      r.fail(fmt::format("entry '{}' data [{}, +{}) is misaligned or outside the data section [{}, {})", name, offset,
                         size, data_start, end));
    if (r.pos() > table_offset + table_size) r.fail(fmt::format("entry '{}' runs past the end of the table", name));
    if (!seen.insert({static_cast<int>(kind), name}).second) r.fail(fmt::format("duplicate entry '{}'", name));
    ranges.emplace_back(offset, size);
    Tensor value(shape);
    if (size > 0) std::memcpy(value.data(), bytes.data() + offset, static_cast<std::size_t>(size));
    ck.entries.push_back({std::move(name), static_cast<CheckpointTensorKind>(kind), std::move(value)});
  }
  if (r.pos() != table_offset + table_size)
    r.fail(fmt::format("table has {} bytes but its {} entries use {}", table_size, count, r.pos() - table_offset));
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i - 1].first + ranges[i - 1].second > ranges[i].first)
      r.fail(fmt::format("tensor data at byte {} overlaps the tensor at byte {}", ranges[i - 1].first, ranges[i].first));
  return ck;
}

Checkpoint load_checkpoint(const std::filesystem::path& path) {
  return parse_checkpoint(read_file_bytes(path), path.string());
}

void add_model_state(Checkpoint& checkpoint, Module& model) {
  for (const NamedParameter& p : model.named_parameters())
    checkpoint.add(CheckpointTensorKind::parameter, p.name, p.parameter->value);
  for (const NamedBuffer& b : model.named_buffers()) checkpoint.add(CheckpointTensorKind::buffer, b.name, b.buffer->value);
}

LoadReport load_model_state(Module& model, const Checkpoint& checkpoint, const LoadOptions& options,
                            std::string_view source) {
  LoadReport report;
  std::set<std::pair<int, std::string>> wanted;
  struct Target {
    CheckpointTensorKind kind;
    std::string name;
    Tensor* tensor;
  };
  std::vector<Target> targets;
  for (const NamedParameter& p : model.named_parameters())
    targets.push_back({CheckpointTensorKind::parameter, p.name, &p.parameter->value});
  for (const NamedBuffer& b : model.named_buffers())
    targets.push_back({CheckpointTensorKind::buffer, b.name, &b.buffer->value});
  // Check everything first, so a failed load leaves the model untouched.
  std::vector<std::pair<Tensor*, const Tensor*>> copies;
  for (const Target& t : targets) {
    wanted.insert({static_cast<int>(t.kind), t.name});
    const CheckpointEntry* e = checkpoint.find(t.kind, t.name);
    if (e == nullptr) {
      report.missing.push_back(t.name);
      continue;
    }
    if (e->value.shape() != t.tensor->shape())
      throw FormatError(fmt::format("{}: {} '{}' has shape {}, the model expects {}", source,
                                    checkpoint_kind_name(t.kind), t.name, shape_to_string(e->value.shape()),
                                    shape_to_string(t.tensor->shape())));
    copies.emplace_back(t.tensor, &e->value);
    report.loaded.push_back(t.name);
  }
  for (const CheckpointEntry& e : checkpoint.entries) {
    if (e.kind != CheckpointTensorKind::parameter && e.kind != CheckpointTensorKind::buffer) continue;
    if (!wanted.count({static_cast<int>(e.kind), e.name})) report.unexpected.push_back(e.name);
  }
  auto list = [](const std::vector<std::string>& names) {
    const std::size_t shown = std::min<std::size_t>(names.size(), 8);
    std::string s = fmt::format("{}", fmt::join(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(shown), ", "));
    if (names.size() > shown) s += fmt::format(", ... ({} in all)", names.size());
    return s;
  };
  if (!report.missing.empty() && !options.allow_missing)
    throw FormatError(fmt::format("{}: the model has {} entries the checkpoint lacks: {} (a different architecture? "
                                  "allow missing entries to load it partially)",
                                  source, report.missing.size(), list(report.missing)));
  if (!report.unexpected.empty() && !options.allow_unexpected)
    throw FormatError(fmt::format("{}: the checkpoint has {} entries the model lacks: {} (a different architecture? "
                                  "allow unexpected entries to ignore them)",
                                  source, report.unexpected.size(), list(report.unexpected)));
  for (auto& [dst, src] : copies) std::copy(src->data(), src->data() + src->numel(), dst->data());
  return report;
}

void add_optimizer_state(Checkpoint& checkpoint, Optimizer& optimizer, std::string_view group) {
  for (const NamedTensor& t : optimizer.state())
    checkpoint.add(CheckpointTensorKind::optimizer_state, fmt::format("{}/{}", group, t.name), *t.tensor);
}

void load_optimizer_state(Optimizer& optimizer, const Checkpoint& checkpoint, std::string_view group,
                          std::string_view source) {
  std::vector<std::pair<Tensor*, const Tensor*>> copies;
  for (const NamedTensor& t : optimizer.state()) {
    const std::string name = fmt::format("{}/{}", group, t.name);
    const CheckpointEntry* e = checkpoint.find(CheckpointTensorKind::optimizer_state, name);
    if (e == nullptr)
      throw FormatError(fmt::format("{}: optimizer state '{}' is missing (was the checkpoint written with the {} "
                                    "optimizer and the same parameters?)",
                                    source, name, optimizer.kind()));
    if (e->value.shape() != t.tensor->shape())
      throw FormatError(fmt::format("{}: optimizer state '{}' has shape {}, expected {}", source, name,
                                    shape_to_string(e->value.shape()), shape_to_string(t.tensor->shape())));
    copies.emplace_back(t.tensor, &e->value);
  }
  for (auto& [dst, src] : copies) std::copy(src->data(), src->data() + src->numel(), dst->data());
}

LoadedModel load_model_checkpoint(const std::filesystem::path& path, const LoadOptions& options) {
  LoadedModel out;
  out.checkpoint = load_checkpoint(path);
  out.metadata = read_run_metadata(out.checkpoint, path);
  if (!out.metadata.model)
    throw FormatError(fmt::format("checkpoint {}: metadata field 'model' is null: the checkpoint holds a model outside "
                                  "the zoo, which it cannot rebuild",
                                  path.string()));
  out.spec = *out.metadata.model;
  out.model = make_model(out.spec);
  load_model_state(*out.model, out.checkpoint, options, path.string());
  return out;
}

}  // namespace bitmix::nn
