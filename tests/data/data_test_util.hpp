#pragma once
// Builders for small dataset files in a scratch directory, so the reader tests own their inputs.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <fstream>
#include <string>
#include <vector>

namespace bitmix::data::testing {

class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            (std::string("bitmix_data_") + info->test_suite_name() + "_" + info->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::filesystem::path& file, const std::vector<uint8_t>& bytes) {
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline void write_gzip(const std::filesystem::path& file, const std::vector<uint8_t>& bytes) {
  gzFile gz = gzopen(file.string().c_str(), "wb");
  ASSERT_NE(gz, nullptr);
  ASSERT_EQ(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(gz);
}

// An IDX file: 00 00 <type> <ndim> <big-endian dims> <payload>.
inline std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload,
                                      uint8_t type = 0x08) {
  std::vector<uint8_t> bytes = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    bytes.push_back(static_cast<uint8_t>(d >> 24));
    bytes.push_back(static_cast<uint8_t>(d >> 16));
    bytes.push_back(static_cast<uint8_t>(d >> 8));
    bytes.push_back(static_cast<uint8_t>(d));
  }
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  return bytes;
}

// Deterministic pixel pattern for image i.
inline std::vector<uint8_t> pattern(std::size_t count, uint32_t salt) {
  std::vector<uint8_t> v(count);
  for (std::size_t i = 0; i < count; ++i) v[i] = static_cast<uint8_t>((i * 31 + salt * 17 + (i >> 3)) & 0xff);
  return v;
}

// Expects `fn` to throw E with a message containing every fragment.
template <typename E, typename Fn>
void expect_error(Fn fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    const std::string message = e.what();
    for (const std::string& f : fragments) EXPECT_NE(message.find(f), std::string::npos) << message;
  }
}

// Writes a MNIST-style directory with `train` and `test` images of size rows x cols.
inline void write_mnist_dir(const std::filesystem::path& dir, uint32_t train, uint32_t test, uint32_t rows,
                            uint32_t cols, bool gzip) {
  auto write = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    if (gzip) write_gzip(dir / (name + ".gz"), bytes);
    else write_bytes(dir / name, bytes);
  };
  auto labels = [](uint32_t n) {
    std::vector<uint8_t> l(n);
    for (uint32_t i = 0; i < n; ++i) l[i] = static_cast<uint8_t>(i % 10);
    return l;
  };
  write("train-images-idx3-ubyte", idx_bytes({train, rows, cols}, pattern(std::size_t{train} * rows * cols, 1)));
  write("train-labels-idx1-ubyte", idx_bytes({train}, labels(train)));
  write("t10k-images-idx3-ubyte", idx_bytes({test, rows, cols}, pattern(std::size_t{test} * rows * cols, 2)));
  write("t10k-labels-idx1-ubyte", idx_bytes({test}, labels(test)));
}

// CIFAR-10 records: label byte then 3072 pixel bytes.
inline std::vector<uint8_t> cifar_records(uint32_t count, uint32_t salt) {
  std::vector<uint8_t> bytes;
  for (uint32_t r = 0; r < count; ++r) {
    bytes.push_back(static_cast<uint8_t>((r + salt) % 10));
    const std::vector<uint8_t> pixels = pattern(3072, salt * 100 + r);
    bytes.insert(bytes.end(), pixels.begin(), pixels.end());
  }
  return bytes;
}

inline void write_cifar_dir(const std::filesystem::path& dir, uint32_t per_batch) {
  std::filesystem::create_directories(dir);
  for (uint32_t i = 1; i <= 5; ++i) write_bytes(dir / ("data_batch_" + std::to_string(i) + ".bin"), cifar_records(per_batch, i));
  write_bytes(dir / "test_batch.bin", cifar_records(per_batch, 9));
}

}  // namespace bitmix::data::testing
