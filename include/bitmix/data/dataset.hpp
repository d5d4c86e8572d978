#pragma once
// Image classification datasets held in memory as 8-bit pixels, and the readers for the two
// on-disk formats bitmix supports: CIFAR-10 binary batches and IDX (MNIST, Fashion-MNIST),
// plain or gzip-compressed. Every reader validates sizes, magic numbers and label ranges and
// throws bitmix::FormatError / bitmix::IoError naming the file and the problem.

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bitmix::data {

struct Dataset {
  std::string name;                      // "cifar10", "fashion-mnist", ...
  int64_t channels = 0, height = 0, width = 0;
  std::vector<uint8_t> images;           // [size, channels, height, width], planar per image
  std::vector<uint8_t> labels;           // [size], each < num_classes()
  std::vector<std::string> class_names;  // index = label

  int64_t size() const noexcept { return static_cast<int64_t>(labels.size()); }
  int64_t image_numel() const noexcept { return channels * height * width; }
  int num_classes() const noexcept { return static_cast<int>(class_names.size()); }
  std::span<const uint8_t> image(int64_t index) const noexcept {
    return {images.data() + index * image_numel(), static_cast<std::size_t>(image_numel())};
  }
  // Images [begin, begin + count) as a new dataset (throws ArgumentError if out of range).
  Dataset slice(int64_t begin, int64_t count) const;
};

struct DatasetSplits {
  Dataset train;
  Dataset test;
};

// ---- CIFAR-10 binary layout: records of 1 label byte + 3072 planar RGB bytes (32x32).
// `dir` is either the cifar-10-batches-bin directory itself or a directory containing it.
DatasetSplits load_cifar10(const std::filesystem::path& dir);
// One batch file (data_batch_N.bin or test_batch.bin); appends to `out`.
void read_cifar10_batch(const std::filesystem::path& file, Dataset& out);
// The same from bytes in memory; `source` names them in messages. Throws FormatError; `out` is
// left unchanged when it throws.
void parse_cifar10_batch(std::span<const uint8_t> bytes, std::string_view source, Dataset& out);
const std::vector<std::string>& cifar10_class_names();

// ---- IDX (MNIST family). Plain files or gzip (detected from the first two bytes).
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // unsigned-byte payload, row-major
};
IdxArray read_idx(const std::filesystem::path& file);
// The same from bytes in memory (gzip detected the same way); `source` names them in messages.
IdxArray parse_idx(std::vector<uint8_t> bytes, std::string_view source);
// Images (3-d IDX) and labels (1-d IDX) with matching counts; labels must be < class_names.size().
Dataset load_idx_pair(const std::filesystem::path& images, const std::filesystem::path& labels,
                      std::string name, std::vector<std::string> class_names);
std::filesystem::path default_fashion_mnist_dir();  // /usr/share/datasets/fashion-mnist
// train-images-idx3-ubyte[.gz] etc. in `dir` (default: Debian's dataset-fashion-mnist location).
DatasetSplits load_fashion_mnist(const std::filesystem::path& dir = default_fashion_mnist_dir());
DatasetSplits load_mnist(const std::filesystem::path& dir);
const std::vector<std::string>& fashion_mnist_class_names();

// ---- The --data flag: "fashion-mnist", "fashion-mnist:DIR", "mnist:DIR", "cifar10:DIR".
struct DataSpec {
  std::string kind;             // "fashion-mnist" | "mnist" | "cifar10"
  std::filesystem::path dir;    // empty = the kind's default location
  std::string to_string() const;
};
// Throws ArgumentError naming the accepted forms.
DataSpec parse_data_spec(std::string_view text);
DatasetSplits load_dataset(const DataSpec& spec);

}  // namespace bitmix::data
