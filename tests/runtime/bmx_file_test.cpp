#include "bitmix/runtime/bmx_file.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"

namespace bitmix::runtime {
namespace {

BmxWriter sample_writer() {
  BmxWriter w;
  w.set("model", std::string("resnet20"));
  w.set("input_shape", std::vector<int64_t>{1, 28, 28});
  w.set("mean", std::vector<double>{0.286});
  w.set("classes", std::vector<std::string>{"t-shirt/top", "trouser"});
  w.set("layers", int64_t{21});
  w.set("scale", 0.125);
  const std::vector<float> weights = {1.5f, -2.0f, 3.25f};
  w.add_tensor("fc.scale", weights, {3});
  const std::vector<int32_t> codes = {-3, -1, 1, 3, 5, 7};
  w.add_tensor("conv1.codes", codes, {2, 3});
  const std::vector<uint8_t> planes(130, 0xA5);
  w.add_tensor("layer1.0.conv1.planes", DType::u8, {130}, planes);
  w.add_tensor("empty", DType::u32, {0, 4}, {});
  return w;
}

// Recomputes the header and section checksums after a test edits a serialized file, so the
// structural checks (not the checksums) are what rejects it. Layout: docs/bmx-format.md.
void refresh_checksums(std::vector<uint8_t>& bytes) {
  for (int s = 0; s < 3; ++s) {
    const std::size_t entry = 32 + 24 * static_cast<std::size_t>(s);
    uint64_t offset = 0, size = 0;
    std::memcpy(&offset, bytes.data() + entry + 8, 8);
    std::memcpy(&size, bytes.data() + entry + 16, 8);
    if (offset <= bytes.size() && size <= bytes.size() - offset) {
      const uint32_t crc = crc32(std::span<const uint8_t>(bytes).subspan(offset, size));
      std::memcpy(bytes.data() + entry + 4, &crc, 4);
    }
  }
  const uint32_t header_crc = crc32(std::span<const uint8_t>(bytes).first(124));
  std::memcpy(bytes.data() + 124, &header_crc, 4);
}

uint64_t section_offset(const std::vector<uint8_t>& bytes, int s) {
  uint64_t offset = 0;
  std::memcpy(&offset, bytes.data() + 32 + 24 * s + 8, 8);
  return offset;
}

void expect_format_error(std::vector<uint8_t> bytes, const std::string& fragment) {
  try {
    BmxFile::parse(bytes, "model.bmx");
    ADD_FAILURE() << "accepted a file that should fail with: " << fragment;
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.bmx"), std::string::npos) << e.what();
  }
}

TEST(BmxFile, RoundTripsMetadataAndTensors) {
  const std::vector<uint8_t> bytes = sample_writer().serialize();
  const BmxFile f = BmxFile::parse(bytes, "mem");
  EXPECT_EQ(f.get_string("model"), "resnet20");
  EXPECT_EQ(f.get_ints("input_shape"), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(f.get_strings("classes")[1], "trouser");
  EXPECT_EQ(f.get_int("layers"), 21);
  EXPECT_DOUBLE_EQ(f.get_real("scale"), 0.125);
  EXPECT_DOUBLE_EQ(f.get_reals("mean")[0], 0.286);
  EXPECT_EQ(f.floats("fc.scale", {3}), (std::vector<float>{1.5f, -2.0f, 3.25f}));
  EXPECT_EQ(f.ints("conv1.codes", {2, 3}), (std::vector<int32_t>{-3, -1, 1, 3, 5, 7}));
  const TensorEntry& planes = f.tensor("layer1.0.conv1.planes", DType::u8);
  EXPECT_EQ(planes.bytes.size(), 130u);
  EXPECT_EQ(planes.bytes[129], 0xA5);
  EXPECT_EQ(f.tensor("empty").numel(), 0);
  for (const TensorEntry& t : f.tensors())
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.bytes.data()) % 64, 0u) << t.name;
}

TEST(BmxFile, TypedAccessNamesTheKey) {
  const BmxFile f = BmxFile::parse(sample_writer().serialize(), "mem");
  try {
    f.get_int("model");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'model' is not an integer"), std::string::npos) << e.what();
  }
  EXPECT_THROW(f.get_string("absent"), FormatError);
  EXPECT_THROW(f.floats("conv1.codes"), FormatError);
  EXPECT_THROW(f.ints("conv1.codes", {3, 2}), FormatError);
  EXPECT_THROW(f.tensor("nope"), FormatError);
}

TEST(BmxFile, EveryTruncationIsRejected) {
  const std::vector<uint8_t> bytes = sample_writer().serialize();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(BmxFile::parse(cut, "cut.bmx"), FormatError) << "length " << n;
  }
}

TEST(BmxFile, EveryCorruptedByteIsRejected) {
  const std::vector<uint8_t> bytes = sample_writer().serialize();
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    std::vector<uint8_t> bad = bytes;
    bad[i] ^= 0x10;
    // Padding bytes between sections are not covered by a checksum; everything else is.
    try {
      BmxFile::parse(bad, "bad.bmx");
      const uint64_t table_end = section_offset(bytes, 1) + [&] {
        uint64_t size = 0;
        std::memcpy(&size, bytes.data() + 32 + 24 + 16, 8);
        return size;
      }();
      EXPECT_TRUE(i >= table_end && i < section_offset(bytes, 2)) << "corrupt byte " << i << " accepted";
    } catch (const FormatError&) {
    }
  }
}

TEST(BmxFile, TrailingDataAndWrongMagicAndVersion) {
  std::vector<uint8_t> bytes = sample_writer().serialize();
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  expect_format_error(longer, "trailing data");
  std::vector<uint8_t> magic = bytes;
  magic[0] = 'X';
  expect_format_error(magic, "wrong magic");
  std::vector<uint8_t> version = bytes;
  version[8] = 2;
  refresh_checksums(version);
  expect_format_error(version, "version 2");
}

TEST(BmxFile, StructuralLiesAreRejectedEvenWithValidChecksums) {
  const std::vector<uint8_t> bytes = sample_writer().serialize();
  const uint64_t table = section_offset(bytes, 1);
  // Tensor count far beyond what the table can hold.
  {
    std::vector<uint8_t> b = bytes;
    const uint32_t count = 0x7fffffff;
    std::memcpy(b.data() + table, &count, 4);
    refresh_checksums(b);
    expect_format_error(b, "cannot fit");
  }
  // First tensor ("fc.scale", 8-byte name): dtype byte at table + 4 + 2 + 8.
  const std::size_t first = table + 4 + 2 + 8;
  {
    std::vector<uint8_t> b = bytes;
    b[first] = 99;
    refresh_checksums(b);
    expect_format_error(b, "unknown dtype");
  }
  {
    std::vector<uint8_t> b = bytes;
    b[first + 1] = 9;  // rank
    refresh_checksums(b);
    expect_format_error(b, "rank 9");
  }
  {
    std::vector<uint8_t> b = bytes;
    const int64_t extent = int64_t{1} << 62;
    std::memcpy(b.data() + first + 2, &extent, 8);  // claims 2^62 floats
    refresh_checksums(b);
    expect_format_error(b, "fc.scale");
  }
  {
    std::vector<uint8_t> b = bytes;
    const uint64_t offset = uint64_t{1} << 40;
    std::memcpy(b.data() + first + 2 + 8, &offset, 8);
    refresh_checksums(b);
    expect_format_error(b, "outside");
  }
  {
    std::vector<uint8_t> b = bytes;
    const uint64_t offset = 64;  // second tensor's slot: overlaps it
    std::memcpy(b.data() + first + 2 + 8, &offset, 8);
    refresh_checksums(b);
    expect_format_error(b, "overlap");
  }
  {
    std::vector<uint8_t> b = bytes;
    const uint64_t size = uint64_t{1} << 60;  // metadata section size
    std::memcpy(b.data() + 32 + 16, &size, 8);
    refresh_checksums(b);
    expect_format_error(b, "outside the file");
  }
}

TEST(BmxFile, NonZeroReservedHeaderFieldsAreRejected) {
  const std::vector<uint8_t> bytes = sample_writer().serialize();
  ASSERT_NO_THROW(BmxFile::parse(bytes, "model.bmx"));
  {
    std::vector<uint8_t> b = bytes;
    b[29] = 1;  // the u32 at byte 28
    refresh_checksums(b);
    expect_format_error(b, "reserved header field at byte 28 is 256, expected 0");
  }
  for (const std::size_t byte : {std::size_t{104}, std::size_t{115}, std::size_t{123}}) {
    std::vector<uint8_t> b = bytes;
    b[byte] = 7;
    refresh_checksums(b);
    expect_format_error(b, fmt::format("reserved header byte {} is 7, expected 0", byte));
  }
}

TEST(BmxFile, WriterRejectsInconsistentTensorsAndWritesAtomically) {
  BmxWriter w;
  const std::vector<float> three = {1, 2, 3};
  EXPECT_THROW(w.add_tensor("x", three, {4}), ArgumentError);
  w.add_tensor("x", three, {3});
  EXPECT_THROW(w.add_tensor("x", three, {3}), ArgumentError);
  EXPECT_THROW(w.set("", int64_t{1}), ArgumentError);
  const auto dir = std::filesystem::temp_directory_path() / "bitmix_bmx_writer_test";
  std::filesystem::remove_all(dir);
  w.write(dir / "sub" / "m.bmx");
  EXPECT_EQ(BmxFile::load(dir / "sub" / "m.bmx").floats("x"), three);
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir / "sub")) ++files;
  EXPECT_EQ(files, 1);
  EXPECT_THROW(BmxFile::load(dir / "missing.bmx"), IoError);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace bitmix::runtime
