// IDX files (the MNIST family), plain or gzip-compressed.
//
// Layout: two zero bytes, a type byte (0x08 = unsigned byte), a dimension count, one big-endian
// uint32 per dimension, then the payload. Every field is checked against the file length before
// anything is read, so a truncated or corrupt file is reported, never read past its end.
#include <fmt/format.h>
#include <zlib.h>

#include <limits>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/data/dataset.hpp"

namespace bitmix::data {
namespace {

// Largest decompressed IDX file we accept: far above Fashion-MNIST's 47 MB, low enough that a
// gzip bomb cannot exhaust memory.
constexpr std::size_t kMaxIdxBytes = std::size_t{1} << 31;

std::vector<uint8_t> gunzip(const std::vector<uint8_t>& compressed, std::string_view file) {
  z_stream stream{};
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK)
    throw Error(fmt::format("{}: cannot initialize zlib", file));
  std::vector<uint8_t> out;
  out.resize(std::max<std::size_t>(compressed.size() * 4, 1 << 16));
  stream.next_in = const_cast<Bytef*>(compressed.data());
  stream.avail_in = static_cast<uInt>(compressed.size());
  int status = Z_OK;
  while (true) {
    if (stream.total_out == out.size()) {
      if (out.size() >= kMaxIdxBytes) {
        inflateEnd(&stream);
        throw FormatError(fmt::format("{}: decompresses to more than {} bytes; not an IDX file we accept",
                                      file, kMaxIdxBytes));
      }
      out.resize(std::min(out.size() * 2, kMaxIdxBytes));
    }
    stream.next_out = out.data() + stream.total_out;
    stream.avail_out = static_cast<uInt>(out.size() - stream.total_out);
    status = inflate(&stream, Z_NO_FLUSH);
    if (status == Z_STREAM_END) break;
    if (status == Z_BUF_ERROR && stream.avail_in == 0) {
      inflateEnd(&stream);
      throw FormatError(fmt::format("{}: truncated gzip stream (ended after {} compressed bytes)", file,
                                    compressed.size()));
    }
    if (status != Z_OK && status != Z_BUF_ERROR) {
      const std::string reason = stream.msg ? stream.msg : zError(status);
      inflateEnd(&stream);
      throw FormatError(fmt::format("{}: unreadable gzip data: {}", file, reason));
    }
  }
  out.resize(stream.total_out);
  inflateEnd(&stream);
  return out;
}

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string_view idx_type_name(uint8_t type) {
  switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "short";
    case 0x0C: return "int";
    case 0x0D: return "float";
    case 0x0E: return "double";
    default: return "unknown";
  }
}

}  // namespace

IdxArray read_idx(const std::filesystem::path& file) { return parse_idx(read_file_bytes(file), file.string()); }

IdxArray parse_idx(std::vector<uint8_t> bytes, std::string_view name) {
  if (bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) bytes = gunzip(bytes, name);
  if (bytes.empty()) throw FormatError(fmt::format("{}: empty file, expected an IDX header", name));
  if (bytes.size() < 4)
    throw FormatError(fmt::format("{}: truncated: {} bytes, an IDX header needs at least 4", name, bytes.size()));
  if (bytes[0] != 0 || bytes[1] != 0)
    throw FormatError(fmt::format("{}: wrong magic {:02x} {:02x}, an IDX file starts with 00 00", name, bytes[0],
                                  bytes[1]));
  const uint8_t type = bytes[2];
  if (type != 0x08)
    throw FormatError(fmt::format("{}: element type 0x{:02x} ({}), expected 0x08 (unsigned byte)", name, type,
                                  idx_type_name(type)));
  const int ndim = bytes[3];
  if (ndim < 1 || ndim > 4)
    throw FormatError(fmt::format("{}: {} dimensions, expected 1 to 4", name, ndim));
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(ndim);
  if (bytes.size() < header)
    throw FormatError(fmt::format("{}: truncated header: {} bytes, {} dimensions need {}", name, bytes.size(), ndim,
                                  header));
  IdxArray array;
  uint64_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    const uint32_t extent = read_be32(bytes.data() + 4 + 4 * d);
    array.dims.push_back(extent);
    count *= extent;
    if (count > kMaxIdxBytes)
      throw FormatError(fmt::format("{}: dimensions describe more than {} elements", name, kMaxIdxBytes));
  }
  const uint64_t expected = header + count;
  if (bytes.size() != expected) {
    const std::string dims = fmt::format("{}", fmt::join(array.dims, "x"));
    if (bytes.size() < expected)
      throw FormatError(fmt::format("{}: truncated: {} bytes, header ({}) needs {}", name, bytes.size(), dims,
                                    expected));
    throw FormatError(fmt::format("{}: {} bytes, header ({}) needs exactly {} ({} trailing bytes)", name,
                                  bytes.size(), dims, expected, bytes.size() - expected));
  }
  array.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return array;
}

Dataset load_idx_pair(const std::filesystem::path& images, const std::filesystem::path& labels, std::string name,
                      std::vector<std::string> class_names) {
  IdxArray image_array = read_idx(images);
  IdxArray label_array = read_idx(labels);
  if (image_array.dims.size() != 3)
    throw FormatError(fmt::format("{}: {} dimensions, an image file needs 3 (count, rows, columns)",
                                  images.string(), image_array.dims.size()));
  if (label_array.dims.size() != 1)
    throw FormatError(fmt::format("{}: {} dimensions, a label file needs 1 (count)", labels.string(),
                                  label_array.dims.size()));
  if (image_array.dims[0] != label_array.dims[0])
    throw FormatError(fmt::format("{} has {} images but {} has {} labels", images.string(), image_array.dims[0],
                                  labels.string(), label_array.dims[0]));
  if (image_array.dims[0] == 0) throw FormatError(fmt::format("{}: holds no images", images.string()));
  if (image_array.dims[1] == 0 || image_array.dims[2] == 0)
    throw FormatError(fmt::format("{}: images of size {}x{}", images.string(), image_array.dims[1],
                                  image_array.dims[2]));
  for (std::size_t i = 0; i < label_array.data.size(); ++i)
    if (label_array.data[i] >= class_names.size())
      throw FormatError(fmt::format("{}: label {} at index {} is out of range 0-{}", labels.string(),
                                    label_array.data[i], i, class_names.size() - 1));
  Dataset dataset;
  dataset.name = std::move(name);
  dataset.channels = 1;
  dataset.height = image_array.dims[1];
  dataset.width = image_array.dims[2];
  dataset.images = std::move(image_array.data);
  dataset.labels = std::move(label_array.data);
  dataset.class_names = std::move(class_names);
  return dataset;
}

}  // namespace bitmix::data
