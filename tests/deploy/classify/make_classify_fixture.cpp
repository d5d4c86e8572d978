// Writes the fixture of the classify example test into a directory: model.bmx (a small QAT
// ResNet-8 on 1x12x12 images, 3 classes, compiled by deploy), images-idx3-ubyte (40 random
// images) and labels-idx1-ubyte holding the runtime's own predictions, so that the installed
// example must report 100% accuracy: it proves the package loads the model and computes the
// very same logits.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "bitmix/core/rng.hpp"
#include "bitmix/deploy/compiler.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/runtime/session.hpp"

namespace {

void put_be32(std::ofstream& out, uint32_t v) {
  const char bytes[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                         static_cast<char>(v)};
  out.write(bytes, 4);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_classify_fixture DIR\n";
    return 2;
  }
  using namespace bitmix;
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  nn::ModelSpec spec;
  spec.arch = "resnet8";
  spec.in_channels = 1;
  spec.image_height = spec.image_width = 12;
  spec.num_classes = 3;
  spec.width = 4;
  spec.seed = 5;
  auto model = nn::make_model(spec);
  const Shape image{1, 12, 12};
  nn::apply_bit_config(*model, image, nn::uniform_bit_config(*model, image, "resnet8", nn::UniformBits{2, 2}));
  model->eval();
  Rng rng(6);
  const int64_t count = 40;
  Tensor pixels({count, 1, 12, 12});
  std::vector<char> bytes(static_cast<std::size_t>(pixels.numel()));
  for (int64_t i = 0; i < pixels.numel(); ++i) {
    const auto v = static_cast<uint8_t>(rng.below(256));
    bytes[static_cast<std::size_t>(i)] = static_cast<char>(v);
    pixels[i] = static_cast<float>(v) / 255.0f;
  }
  deploy::CompileOptions o;
  o.name = "classify-fixture";
  o.architecture = "resnet8";
  o.mean = {0.5f};
  o.stddev = {0.25f};
  o.class_names = {"circle", "square", "triangle"};
  Tensor normalized = pixels;
  for (float& v : normalized.values()) v = (v - 0.5f) / 0.25f;
  model->forward(normalized);  // initializes the quantizers
  // Center the classifier's outputs on these images so that the predictions vary (a model
  // that always answers the same class would prove little).
  {
    const Tensor logits = model->forward(normalized);
    auto* fc = dynamic_cast<nn::Linear*>(model->find("fc"));
    if (fc == nullptr || fc->bias() == nullptr) return 1;
    for (int64_t c = 0; c < 3; ++c) {
      float mean = 0;
      for (int64_t i = 0; i < count; ++i) mean += logits.at(i, c) / static_cast<float>(count);
      fc->bias()->value[c] -= mean;
    }
  }
  const runtime::Model compiled = deploy::compile(*model, image, o);
  compiled.save(dir / "model.bmx");
  runtime::Session session(compiled);
  const std::vector<int> labels = runtime::predictions(session.run(pixels));
  if (std::count(labels.begin(), labels.end(), labels[0]) == static_cast<std::ptrdiff_t>(labels.size())) {
    std::cerr << "make_classify_fixture: every image gets class " << labels[0] << "; choose another seed\n";
    return 1;
  }

  std::ofstream images(dir / "images-idx3-ubyte", std::ios::binary);
  put_be32(images, 0x00000803);
  for (uint32_t d : {uint32_t(count), 12u, 12u}) put_be32(images, d);
  images.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  std::ofstream label_file(dir / "labels-idx1-ubyte", std::ios::binary);
  put_be32(label_file, 0x00000801);
  put_be32(label_file, static_cast<uint32_t>(count));
  for (int l : labels) label_file.put(static_cast<char>(l));
  if (!images || !label_file) {
    std::cerr << "make_classify_fixture: could not write " << dir << '\n';
    return 1;
  }
  std::cout << "wrote " << dir / "model.bmx" << " and " << count << " images\n";
  return 0;
}
