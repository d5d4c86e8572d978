#include "bitmix/core/file_io.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "bitmix/core/error.hpp"

namespace bitmix {
namespace {
namespace fs = std::filesystem;

class FileIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("bitmix_file_io_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  int files_in_dir() const {
    int n = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir_)) ++n;
    return n;
  }
  fs::path dir_;
};

TEST_F(FileIoTest, AtomicWriteCreatesParentsAndReplaces) {
  const fs::path target = dir_ / "a" / "b" / "out.txt";
  write_file_atomic(target, std::string_view("first"));
  EXPECT_EQ(read_file_text(target), "first");
  write_file_atomic(target, std::string_view("second"));
  EXPECT_EQ(read_file_text(target), "second");
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(target.parent_path())) ++entries;
  EXPECT_EQ(entries, 1) << "temporary files left behind";
}

TEST_F(FileIoTest, AbandonedWriteLeavesNothing) {
  const fs::path target = dir_ / "model.bin";
  write_file_atomic(target, std::string_view("good"));
  try {
    AtomicFileWriter writer(target);
    writer.write(std::string_view("half-written"));
    throw std::runtime_error("interrupted");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(read_file_text(target), "good");
  EXPECT_EQ(files_in_dir(), 1);
}

TEST_F(FileIoTest, ReadErrorsNameThePath) {
  try {
    read_file_bytes(dir_ / "missing.bin");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.bin"), std::string::npos);
  }
  EXPECT_THROW(read_file_bytes(dir_), IoError);
}

TEST_F(FileIoTest, UnwritableLocationThrows) {
  // A path whose parent is a regular file cannot be created.
  write_file_atomic(dir_ / "file", std::string_view("x"));
  EXPECT_THROW(write_file_atomic(dir_ / "file" / "child", std::string_view("y")), IoError);
}

TEST(Crc32, KnownVectors) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32({reinterpret_cast<const uint8_t*>(check.data()), check.size()}), 0xCBF43926u);
  EXPECT_EQ(crc32({}), 0u);
  // Incremental equals one-shot.
  const auto* p = reinterpret_cast<const uint8_t*>(check.data());
  EXPECT_EQ(crc32({p + 4, 5}, crc32({p, 4})), 0xCBF43926u);
}

}  // namespace
}  // namespace bitmix
