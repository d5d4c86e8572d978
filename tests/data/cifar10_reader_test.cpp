#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "bitmix/core/error.hpp"
#include "bitmix/data/dataset.hpp"
#include "data_test_util.hpp"

namespace bitmix::data {
namespace {
using namespace bitmix::data::testing;

TEST(Cifar10Reader, LoadsAllBatchesInOrder) {
  ScratchDir dir;
  write_cifar_dir(dir.path(), 3);
  const DatasetSplits splits = load_cifar10(dir.path());
  EXPECT_EQ(splits.train.size(), 15);
  EXPECT_EQ(splits.test.size(), 3);
  EXPECT_EQ(splits.train.channels, 3);
  EXPECT_EQ(splits.train.height, 32);
  EXPECT_EQ(splits.train.class_names.size(), 10u);
  // Record 1 of data_batch_2 is image 4: label (1 + 2) % 10, pixels pattern(3072, 201).
  EXPECT_EQ(splits.train.labels[4], 3);
  const auto image = splits.train.image(4);
  EXPECT_EQ(std::vector<uint8_t>(image.begin(), image.end()), pattern(3072, 201));
}

TEST(Cifar10Reader, AcceptsTheParentDirectory) {
  ScratchDir dir;
  write_cifar_dir(dir / "cifar-10-batches-bin", 2);
  EXPECT_EQ(load_cifar10(dir.path()).train.size(), 10);
}

TEST(Cifar10Reader, RejectsSizeNotMultipleOfRecord) {
  ScratchDir dir;
  write_cifar_dir(dir.path(), 2);
  std::vector<uint8_t> bytes = cifar_records(2, 3);
  bytes.pop_back();
  write_bytes(dir / "data_batch_3.bin", bytes);
  expect_error<FormatError>([&] { load_cifar10(dir.path()); }, {"data_batch_3.bin", "multiple of the 3073"});
}

TEST(Cifar10Reader, RejectsLabelOutOfRange) {
  ScratchDir dir;
  write_cifar_dir(dir.path(), 2);
  std::vector<uint8_t> bytes = cifar_records(2, 0);
  bytes[3073] = 10;
  write_bytes(dir / "test_batch.bin", bytes);
  expect_error<FormatError>([&] { load_cifar10(dir.path()); }, {"test_batch.bin", "record 1", "label 10"});
}

TEST(Cifar10Reader, ParsesBytesAndLeavesTheDatasetUnchangedOnError) {
  Dataset out;
  parse_cifar10_batch(cifar_records(2, 0), "memory", out);
  ASSERT_EQ(out.size(), 2);
  const std::vector<uint8_t> before = out.images;
  std::vector<uint8_t> bad = cifar_records(3, 5);
  bad[2 * 3073] = 11;  // the last record's label: the first two must not be appended either
  expect_error<FormatError>([&] { parse_cifar10_batch(bad, "memory", out); }, {"memory", "record 2", "label 11"});
  EXPECT_EQ(out.size(), 2);
  EXPECT_EQ(out.images, before);
}

TEST(Cifar10Reader, RejectsEmptyAndMissingFiles) {
  ScratchDir dir;
  write_cifar_dir(dir.path(), 1);
  write_bytes(dir / "data_batch_5.bin", {});
  expect_error<FormatError>([&] { load_cifar10(dir.path()); }, {"data_batch_5.bin", "empty"});
  std::filesystem::remove(dir / "data_batch_2.bin");
  expect_error<IoError>([&] { load_cifar10(dir.path()); }, {"data_batch_2.bin", "missing"});
  expect_error<IoError>([&] { load_cifar10(dir / "nowhere"); }, {"nowhere", "does not exist"});
}

// The real CIFAR-10 written by ../shared/data/cifar10/make-cifar10-bin.sh; .ci/run sets the variable.
TEST(Cifar10Reader, LoadsRealCifar10) {
  const char* dir = std::getenv("BITMIX_CIFAR10_DIR");
  if (dir == nullptr) GTEST_SKIP() << "BITMIX_CIFAR10_DIR not set";
  const DatasetSplits splits = load_cifar10(dir);
  EXPECT_EQ(splits.train.size(), 50000);
  EXPECT_EQ(splits.test.size(), 10000);
  std::vector<int> counts(10, 0);
  for (uint8_t label : splits.test.labels) ++counts[label];
  for (int c : counts) EXPECT_EQ(c, 1000);
}

TEST(DataSpec, ParsesAcceptedForms) {
  EXPECT_EQ(parse_data_spec("fashion-mnist").kind, "fashion-mnist");
  EXPECT_TRUE(parse_data_spec("fashion-mnist").dir.empty());
  const DataSpec cifar = parse_data_spec("cifar10:/data/c");
  EXPECT_EQ(cifar.kind, "cifar10");
  EXPECT_EQ(cifar.dir, "/data/c");
  EXPECT_EQ(cifar.to_string(), "cifar10:/data/c");
  EXPECT_EQ(parse_data_spec("mnist:x").kind, "mnist");
}

TEST(DataSpec, RejectsOthersNamingTheForms) {
  for (const char* bad : {"imagenet", "cifar10", "cifar10:", "fashion-mnist:", "", "mnist"}) {
    expect_error<ArgumentError>([&] { parse_data_spec(bad); }, {"--data", "cifar10:DIR"});
  }
}

}  // namespace
}  // namespace bitmix::data
