#include "bitmix/data/dataset.hpp"

#include <fmt/format.h>

#include <system_error>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"

namespace bitmix::data {
namespace fs = std::filesystem;

namespace {
constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarImageBytes = 3 * kCifarSide * kCifarSide;
constexpr int64_t kCifarRecordBytes = 1 + kCifarImageBytes;

fs::path find_idx_file(const fs::path& dir, const std::string& stem) {
  for (const char* suffix : {"", ".gz"}) {
    const fs::path candidate = dir / (stem + suffix);
    std::error_code ec;
    if (fs::exists(candidate, ec)) return candidate;
  }
  throw IoError(fmt::format("{}: missing {} (or {}.gz)", dir.string(), stem, stem));
}

void require_directory(const fs::path& dir, std::string_view what) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw IoError(fmt::format("{}: {} directory does not exist", dir.string(), what));
  if (!fs::is_directory(dir, ec)) throw IoError(fmt::format("{}: is not a directory ({})", dir.string(), what));
}

DatasetSplits load_mnist_like(const fs::path& dir, const std::string& name,
                              const std::vector<std::string>& class_names) {
  require_directory(dir, name);
  DatasetSplits splits;
  splits.train = load_idx_pair(find_idx_file(dir, "train-images-idx3-ubyte"),
                               find_idx_file(dir, "train-labels-idx1-ubyte"), name, class_names);
  splits.test = load_idx_pair(find_idx_file(dir, "t10k-images-idx3-ubyte"),
                              find_idx_file(dir, "t10k-labels-idx1-ubyte"), name, class_names);
  if (splits.train.height != splits.test.height || splits.train.width != splits.test.width)
    throw FormatError(fmt::format("{}: training images are {}x{} but test images are {}x{}", dir.string(),
                                  splits.train.height, splits.train.width, splits.test.height, splits.test.width));
  return splits;
}
}  // namespace

Dataset Dataset::slice(int64_t begin, int64_t count) const {
  if (begin < 0 || count < 0 || begin + count > size())
    throw ArgumentError(fmt::format("{}: slice [{}, {}) outside the {} images", name, begin, begin + count, size()));
  Dataset part;
  part.name = name;
  part.channels = channels;
  part.height = height;
  part.width = width;
  part.class_names = class_names;
  part.labels.assign(labels.begin() + begin, labels.begin() + begin + count);
  part.images.assign(images.begin() + begin * image_numel(), images.begin() + (begin + count) * image_numel());
  return part;
}

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"t-shirt/top", "trouser", "pullover", "dress", "coat",
                                                 "sandal",      "shirt",   "sneaker",  "bag",   "ankle boot"};
  return names;
}

void read_cifar10_batch(const fs::path& file, Dataset& out) {
  parse_cifar10_batch(read_file_bytes(file), file.string(), out);
}

void parse_cifar10_batch(std::span<const uint8_t> bytes, std::string_view name, Dataset& out) {
  if (bytes.empty()) throw FormatError(fmt::format("{}: empty file, expected CIFAR-10 records", name));
  if (bytes.size() % kCifarRecordBytes != 0)
    throw FormatError(fmt::format("{}: size {} is not a multiple of the {}-byte CIFAR-10 record (truncated?)", name,
                                  bytes.size(), kCifarRecordBytes));
  const int64_t records = static_cast<int64_t>(bytes.size()) / kCifarRecordBytes;
  // Every label is checked before anything is appended, so a bad file leaves `out` as it was.
  for (int64_t r = 0; r < records; ++r)
    if (const uint8_t label = bytes[static_cast<std::size_t>(r * kCifarRecordBytes)]; label > 9)
      throw FormatError(fmt::format("{}: record {} has label {}, expected 0-9", name, r, label));
  if (out.labels.empty()) {
    out.name = "cifar10";
    out.channels = 3;
    out.height = kCifarSide;
    out.width = kCifarSide;
    out.class_names = cifar10_class_names();
  }
  out.labels.reserve(out.labels.size() + static_cast<std::size_t>(records));
  out.images.reserve(out.images.size() + static_cast<std::size_t>(records * kCifarImageBytes));
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* record = bytes.data() + r * kCifarRecordBytes;
    out.labels.push_back(record[0]);
    out.images.insert(out.images.end(), record + 1, record + kCifarRecordBytes);
  }
}

DatasetSplits load_cifar10(const fs::path& dir) {
  require_directory(dir, "CIFAR-10");
  fs::path root = dir;
  std::error_code ec;
  if (!fs::exists(root / "test_batch.bin", ec) && fs::is_directory(root / "cifar-10-batches-bin", ec))
    root = root / "cifar-10-batches-bin";
  std::vector<fs::path> train_files;
  for (int i = 1; i <= 5; ++i) train_files.push_back(root / fmt::format("data_batch_{}.bin", i));
  const fs::path test_file = root / "test_batch.bin";
  for (const fs::path& f : train_files)
    if (!fs::exists(f, ec))
      throw IoError(fmt::format("{}: missing {} (a CIFAR-10 binary directory holds data_batch_1.bin ... "
                                "data_batch_5.bin and test_batch.bin)",
                                root.string(), f.filename().string()));
  if (!fs::exists(test_file, ec)) throw IoError(fmt::format("{}: missing test_batch.bin", root.string()));
  DatasetSplits splits;
  for (const fs::path& f : train_files) read_cifar10_batch(f, splits.train);
  read_cifar10_batch(test_file, splits.test);
  return splits;
}

fs::path default_fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

DatasetSplits load_fashion_mnist(const fs::path& dir) {
  std::error_code ec;
  if (dir == default_fashion_mnist_dir() && !fs::exists(dir, ec))
    throw IoError(fmt::format("{}: Fashion-MNIST is not installed here; install Debian's dataset-fashion-mnist "
                              "(scripts/setup-debian.sh does) or pass --data fashion-mnist:DIR",
                              dir.string()));
  return load_mnist_like(dir, "fashion-mnist", fashion_mnist_class_names());
}

DatasetSplits load_mnist(const fs::path& dir) {
  static const std::vector<std::string> digits = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  return load_mnist_like(dir, "mnist", digits);
}

std::string DataSpec::to_string() const { return dir.empty() ? kind : kind + ":" + dir.string(); }

DataSpec parse_data_spec(std::string_view text) {
  const auto colon = text.find(':');
  DataSpec spec;
  spec.kind = std::string(text.substr(0, colon));
  if (colon != std::string_view::npos) spec.dir = std::string(text.substr(colon + 1));
  const bool known = spec.kind == "fashion-mnist" || spec.kind == "mnist" || spec.kind == "cifar10";
  const bool needs_dir = spec.kind != "fashion-mnist";
  if (!known || (colon != std::string_view::npos && spec.dir.empty()) || (needs_dir && spec.dir.empty()))
    throw ArgumentError(fmt::format("--data '{}': expected fashion-mnist, fashion-mnist:DIR, mnist:DIR or "
                                    "cifar10:DIR",
                                    text));
  return spec;
}

DatasetSplits load_dataset(const DataSpec& spec) {
  if (spec.kind == "fashion-mnist") return load_fashion_mnist(spec.dir.empty() ? default_fashion_mnist_dir() : spec.dir);
  if (spec.kind == "mnist") return load_mnist(spec.dir);
  if (spec.kind == "cifar10") return load_cifar10(spec.dir);
  throw ArgumentError(fmt::format("unknown dataset kind '{}'", spec.kind));
}

}  // namespace bitmix::data
