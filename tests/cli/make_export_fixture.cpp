// Writes the checkpoints of the export CLI test into a directory, in the metadata layout bitmix
// train wrote before the metadata was versioned (tests/nn/legacy_metadata.hpp):
//   good.ckpt      a quantized (W2A2) ResNet-8 on 1x12x12 images with initialized quantizers
//   no_norm.ckpt   the same without its "normalization" object
//   bad_json.ckpt  the same with its metadata cut in the middle (a JSON syntax error)
#include <filesystem>
#include <iostream>

#include "bitmix/core/rng.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/quantization.hpp"
#include "nn/legacy_metadata.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_export_fixture DIR\n";
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
  quant::BitConfig config = nn::uniform_bit_config(*model, image, "resnet8", nn::UniformBits{2, 2});
  nn::annotate_bit_config(config, *model, image);
  nn::apply_bit_config(*model, image, config);
  model->eval();
  Rng rng(6);
  Tensor inputs({8, 1, 12, 12});
  for (float& v : inputs.values()) v = rng.normal(0.0f, 1.0f);
  model->forward(inputs);  // initializes the quantizers

  nn::testing::LegacyTrainerRun run;
  run.options.epochs = 1;
  run.epoch = 0;
  run.dataset_name = "synthetic";
  run.channels = 1;
  run.height = run.width = 12;
  run.classes = 3;
  run.train_images = 8;
  run.mean = {0.5f};
  run.stddev = {0.25f};
  run.model = nn::testing::legacy_train_model_object(spec, "synthetic", "none", &config, "--quant lsq --wbits 2 --abits 2");
  run.groups = {{"main", {R"({"kind": "sgd"})",
                          R"({"kind": "cosine", "base_lr": 0.1, "total_steps": 1, "steps_per_epoch": 1, "warmup_steps": 0, "warmup_start_factor": 0, "min_lr": 0, "milestones": [], "gamma": 0.1})"}}};
  nn::Checkpoint ck;
  nn::add_model_state(ck, *model);
  ck.metadata = nn::testing::legacy_trainer_metadata(run);
  nn::save_checkpoint(dir / "good.ckpt", ck);
  const std::string good = ck.metadata;
  ck.metadata = good.substr(0, good.size() / 2);
  nn::save_checkpoint(dir / "bad_json.ckpt", ck);
  nlohmann::json doc = nlohmann::json::parse(good);
  doc.erase("normalization");
  ck.metadata = doc.dump(2);
  nn::save_checkpoint(dir / "no_norm.ckpt", ck);
  std::cout << "wrote " << dir << '\n';
  return 0;
}
