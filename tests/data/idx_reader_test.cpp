#include <gtest/gtest.h>

#include <string>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/data/dataset.hpp"
#include "data_test_util.hpp"

namespace bitmix::data {
namespace {
using namespace bitmix::data::testing;

TEST(IdxReader, ReadsPlainAndGzipIdentically) {
  ScratchDir dir;
  const std::vector<uint8_t> payload = pattern(2 * 3 * 4, 5);
  write_bytes(dir / "plain", idx_bytes({2, 3, 4}, payload));
  write_gzip(dir / "packed.gz", idx_bytes({2, 3, 4}, payload));
  for (const char* name : {"plain", "packed.gz"}) {
    const IdxArray a = read_idx(dir / name);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3, 4}));
    EXPECT_EQ(a.data, payload);
  }
}

TEST(IdxReader, RejectsEmptyFile) {
  ScratchDir dir;
  write_bytes(dir / "empty", {});
  expect_error<FormatError>([&] { read_idx(dir / "empty"); }, {"empty", "empty file"});
}

TEST(IdxReader, RejectsWrongMagic) {
  ScratchDir dir;
  std::vector<uint8_t> bytes = idx_bytes({1}, {0});
  bytes[0] = 0x12;
  write_bytes(dir / "bad", bytes);
  expect_error<FormatError>([&] { read_idx(dir / "bad"); }, {"bad", "magic"});
}

TEST(IdxReader, RejectsUnsupportedElementType) {
  ScratchDir dir;
  write_bytes(dir / "floats", idx_bytes({1}, {0, 0, 0, 0}, 0x0D));
  expect_error<FormatError>([&] { read_idx(dir / "floats"); }, {"floats", "0x0d", "float", "unsigned byte"});
}

TEST(IdxReader, RejectsBadDimensionCount) {
  ScratchDir dir;
  write_bytes(dir / "zero_dims", {0, 0, 8, 0});
  expect_error<FormatError>([&] { read_idx(dir / "zero_dims"); }, {"zero_dims", "0 dimensions"});
  write_bytes(dir / "many_dims", idx_bytes({1, 1, 1, 1, 1}, {7}));
  expect_error<FormatError>([&] { read_idx(dir / "many_dims"); }, {"many_dims", "5 dimensions"});
}

TEST(IdxReader, RejectsTruncatedHeaderAndPayload) {
  ScratchDir dir;
  write_bytes(dir / "short_header", {0, 0, 8, 3, 0, 0});
  expect_error<FormatError>([&] { read_idx(dir / "short_header"); }, {"short_header", "truncated header"});
  std::vector<uint8_t> bytes = idx_bytes({4, 5, 5}, pattern(100, 0));
  bytes.resize(bytes.size() - 1);
  write_bytes(dir / "short_payload", bytes);
  expect_error<FormatError>([&] { read_idx(dir / "short_payload"); }, {"short_payload", "truncated", "4x5x5"});
  write_bytes(dir / "three_bytes", {0, 0, 8});
  expect_error<FormatError>([&] { read_idx(dir / "three_bytes"); }, {"three_bytes", "truncated"});
}

TEST(IdxReader, RejectsTrailingBytes) {
  ScratchDir dir;
  std::vector<uint8_t> bytes = idx_bytes({2}, {1, 2});
  bytes.push_back(0);
  write_bytes(dir / "long", bytes);
  expect_error<FormatError>([&] { read_idx(dir / "long"); }, {"long", "1 trailing"});
}

TEST(IdxReader, RejectsHugeDimensionsWithoutAllocating) {
  ScratchDir dir;
  write_bytes(dir / "huge", idx_bytes({0xffffffffu, 0xffffffffu}, {}));
  expect_error<FormatError>([&] { read_idx(dir / "huge"); }, {"huge"});
}

TEST(IdxReader, RejectsUnreadableAndTruncatedGzip) {
  ScratchDir dir;
  write_bytes(dir / "garbage.gz", {0x1f, 0x8b, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03, 0x04});
  expect_error<FormatError>([&] { read_idx(dir / "garbage.gz"); }, {"garbage.gz", "gzip"});
  write_gzip(dir / "full.gz", idx_bytes({3, 10, 10}, pattern(300, 3)));
  std::vector<uint8_t> compressed = read_file_bytes(dir / "full.gz");
  compressed.resize(compressed.size() / 2);
  write_bytes(dir / "cut.gz", compressed);
  expect_error<FormatError>([&] { read_idx(dir / "cut.gz"); }, {"cut.gz", "truncated gzip"});
}

TEST(IdxReader, MissingFileIsAnIoError) {
  ScratchDir dir;
  expect_error<IoError>([&] { read_idx(dir / "nope"); }, {"nope", "no such file"});
}

TEST(IdxPair, LoadsImagesAndLabels) {
  ScratchDir dir;
  write_mnist_dir(dir.path(), 12, 5, 6, 7, /*gzip=*/true);
  const DatasetSplits splits = load_fashion_mnist(dir.path());
  EXPECT_EQ(splits.train.size(), 12);
  EXPECT_EQ(splits.test.size(), 5);
  EXPECT_EQ(splits.train.channels, 1);
  EXPECT_EQ(splits.train.height, 6);
  EXPECT_EQ(splits.train.width, 7);
  EXPECT_EQ(splits.train.num_classes(), 10);
  EXPECT_EQ(splits.train.labels[11], 1);
  EXPECT_EQ(splits.test.images, pattern(5 * 6 * 7, 2));
}

TEST(IdxPair, RejectsCountMismatch) {
  ScratchDir dir;
  write_bytes(dir / "images", idx_bytes({3, 2, 2}, pattern(12, 0)));
  write_bytes(dir / "labels", idx_bytes({4}, {0, 1, 2, 3}));
  expect_error<FormatError>([&] { load_idx_pair(dir / "images", dir / "labels", "x", {"a", "b", "c", "d"}); },
                            {"3 images", "4 labels"});
}

TEST(IdxPair, RejectsWrongDimensionCounts) {
  ScratchDir dir;
  write_bytes(dir / "flat_images", idx_bytes({3, 4}, pattern(12, 0)));
  write_bytes(dir / "labels", idx_bytes({3}, {0, 1, 2}));
  expect_error<FormatError>([&] { load_idx_pair(dir / "flat_images", dir / "labels", "x", {"a", "b", "c"}); },
                            {"flat_images", "needs 3"});
  write_bytes(dir / "images", idx_bytes({3, 2, 2}, pattern(12, 0)));
  write_bytes(dir / "square_labels", idx_bytes({3, 1}, {0, 1, 2}));
  expect_error<FormatError>([&] { load_idx_pair(dir / "images", dir / "square_labels", "x", {"a", "b", "c"}); },
                            {"square_labels", "needs 1"});
}

TEST(IdxPair, RejectsLabelOutOfRange) {
  ScratchDir dir;
  write_bytes(dir / "images", idx_bytes({3, 2, 2}, pattern(12, 0)));
  write_bytes(dir / "labels", idx_bytes({3}, {0, 10, 2}));
  std::vector<std::string> ten(10, "c");
  expect_error<FormatError>([&] { load_idx_pair(dir / "images", dir / "labels", "x", ten); },
                            {"labels", "label 10", "index 1", "0-9"});
}

TEST(IdxPair, MissingDirectoryAndFiles) {
  ScratchDir dir;
  expect_error<IoError>([&] { load_fashion_mnist(dir / "absent"); }, {"absent", "does not exist"});
  write_mnist_dir(dir.path(), 4, 4, 2, 2, false);
  std::filesystem::remove(dir / "t10k-labels-idx1-ubyte");
  expect_error<IoError>([&] { load_fashion_mnist(dir.path()); }, {"t10k-labels-idx1-ubyte"});
}

// The real data set from Debian's dataset-fashion-mnist (installed by scripts/setup-debian.sh).
TEST(IdxPair, LoadsRealFashionMnist) {
  if (!std::filesystem::exists(default_fashion_mnist_dir()))
    GTEST_SKIP() << default_fashion_mnist_dir() << " absent (apt-get install dataset-fashion-mnist)";
  const DatasetSplits splits = load_fashion_mnist();
  EXPECT_EQ(splits.train.size(), 60000);
  EXPECT_EQ(splits.test.size(), 10000);
  EXPECT_EQ(splits.train.height, 28);
  EXPECT_EQ(splits.train.width, 28);
  std::vector<int> counts(10, 0);
  for (uint8_t label : splits.train.labels) ++counts[label];
  for (int c : counts) EXPECT_EQ(c, 6000);  // Fashion-MNIST is balanced
}

}  // namespace
}  // namespace bitmix::data
