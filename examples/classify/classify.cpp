// bitmix_classify: classify images with an integer .bmx model through the public API.
//
//   bitmix_classify MODEL.bmx IMAGES [LABELS] [--show N] [--batch B]
//
// IMAGES is an IDX image file (idx3-ubyte, plain or gzip, as MNIST and Fashion-MNIST ship) or a
// CIFAR-10 binary batch (.bin, labels included); LABELS an IDX label file. Prints the first N
// predictions and, when labels are known, the accuracy.
#include <bitmix/core/error.hpp>
#include <bitmix/data/dataset.hpp>
#include <bitmix/runtime/model.hpp>
#include <bitmix/runtime/session.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {

struct Images {
  int64_t count = 0, channels = 0, height = 0, width = 0;
  std::vector<uint8_t> pixels;  // [count, channels, height, width]
  std::vector<int> labels;      // empty when unknown
};

Images read_images(const std::string& path, const std::string& labels_path) {
  Images out;
  if (path.size() > 4 && path.substr(path.size() - 4) == ".bin") {  // CIFAR-10 batch
    bitmix::data::Dataset d;
    bitmix::data::read_cifar10_batch(path, d);
    out = {d.size(), d.channels, d.height, d.width, d.images, {d.labels.begin(), d.labels.end()}};
    return out;
  }
  const bitmix::data::IdxArray idx = bitmix::data::read_idx(path);
  if (idx.dims.size() != 3) throw bitmix::FormatError(path + ": expected a 3-d IDX image file [count, rows, cols]");
  out = {idx.dims[0], 1, idx.dims[1], idx.dims[2], idx.data, {}};
  if (!labels_path.empty()) {
    const bitmix::data::IdxArray l = bitmix::data::read_idx(labels_path);
    if (l.dims.size() != 1 || l.dims[0] != out.count)
      throw bitmix::FormatError(labels_path + ": expected a 1-d IDX label file with one label per image");
    out.labels.assign(l.data.begin(), l.data.end());
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  int64_t show = 10, batch = 64;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--show" || arg == "--batch") && i + 1 < argc) {
      (arg == "--show" ? show : batch) = std::max<int64_t>(arg == "--show" ? 0 : 1, std::atoll(argv[++i]));
    } else if (arg.rfind("--", 0) == 0) {
      std::cerr << "usage: bitmix_classify MODEL.bmx IMAGES [LABELS] [--show N] [--batch B]\n";
      return 2;
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() < 2 || positional.size() > 3) {
    std::cerr << "usage: bitmix_classify MODEL.bmx IMAGES [LABELS] [--show N] [--batch B]\n";
    return 2;
  }
  try {
    // The model: loaded and validated once, shared by any number of sessions.
    const bitmix::runtime::Model model = bitmix::runtime::Model::load(positional[0]);
    const bitmix::runtime::ModelInfo& info = model.info();
    const Images images = read_images(positional[1], positional.size() > 2 ? positional[2] : "");
    if (bitmix::Shape{images.channels, images.height, images.width} != info.input_shape)
      throw bitmix::ShapeError(positional[1] + ": images do not have the model's input shape " +
                               bitmix::runtime::shape_text(info.input_shape));
    std::cout << "model " << info.name << ": " << model.ops().size() << " ops, input "
              << bitmix::runtime::shape_text(info.input_shape) << ", " << model.num_classes() << " classes\n";

    bitmix::runtime::Session session(model);
    const int64_t per_image = images.channels * images.height * images.width;
    int64_t correct = 0;
    double seconds = 0;
    for (int64_t begin = 0; begin < images.count; begin += batch) {
      const int64_t n = std::min(batch, images.count - begin);
      // Session::run takes pixels in [0, 1]; the model applies its own normalization.
      bitmix::Tensor x({n, images.channels, images.height, images.width});
      for (int64_t i = 0; i < n * per_image; ++i)
        x[i] = static_cast<float>(images.pixels[static_cast<std::size_t>(begin * per_image + i)]) / 255.0f;
      const bitmix::Tensor logits = session.run(x);
      seconds += session.last_run_seconds();
      const std::vector<int> predicted = bitmix::runtime::predictions(logits);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t index = begin + i;
        const int p = predicted[static_cast<std::size_t>(i)];
        const bool known = !images.labels.empty();
        if (known) correct += p == images.labels[static_cast<std::size_t>(index)];
        if (index < show) {
          // Softmax probability of the predicted class.
          const float* row = logits.data() + i * model.num_classes();
          double sum = 0;
          for (int64_t c = 0; c < model.num_classes(); ++c) sum += std::exp(static_cast<double>(row[c] - row[p]));
          auto name = [&](int c) {
            return info.class_names.empty() ? std::to_string(c) : info.class_names[static_cast<std::size_t>(c)];
          };
          std::cout << "image " << index << ": " << name(p) << " (" << static_cast<int>(100.0 / sum + 0.5) << "%)";
          if (known) std::cout << ", label " << name(images.labels[static_cast<std::size_t>(index)]);
          std::cout << '\n';
        }
      }
    }
    std::printf("%lld images in %.1f ms (%.1f us per image)\n", static_cast<long long>(images.count), seconds * 1e3,
                seconds * 1e6 / static_cast<double>(images.count));
    if (!images.labels.empty())
      std::printf("accuracy %.2f%% (%lld of %lld)\n", 100.0 * static_cast<double>(correct) / static_cast<double>(images.count),
                  static_cast<long long>(correct), static_cast<long long>(images.count));
    return 0;
  } catch (const bitmix::Error& e) {
    std::cerr << "bitmix_classify: " << e.what() << '\n';
    return 1;
  }
}
