#include "model_options.hpp"

#include <fmt/format.h>

#include <iostream>

#include "bitmix/nn/checkpoint.hpp"

namespace bitmix::cli {

void add_data_subset_options(ArgParser& args) {
  args.option("train-subset", "N", "use only the first N training images (0 = all)", "0");
  args.option("test-subset", "N", "use only the first N test images (0 = all)", "0");
}

data::DatasetSplits load_data(const ArgParser& args, data::DataSpec* spec_out) {
  const data::DataSpec spec = data::parse_data_spec(args.get_string("data"));
  data::DatasetSplits splits = data::load_dataset(spec);
  if (const int64_t n = args.get_int("train-subset", 0, splits.train.size()); n > 0) splits.train = splits.train.slice(0, n);
  if (const int64_t n = args.get_int("test-subset", 0, splits.test.size()); n > 0) splits.test = splits.test.slice(0, n);
  if (spec_out != nullptr) *spec_out = spec;
  return splits;
}

void add_model_options(ArgParser& args) {
  args.choice("model", nn::model_names(), "architecture (with --init: the checkpoint's)", "resnet20");
  args.choice("shortcut", {"A", "B"},
              "ResNet shortcut where the shape changes: A = identity with zero-padded channels, B = 1x1 projection",
              "A");
  args.option("width", "W", "base width (0 = the architecture's default)", "0");
}

nn::ModelSpec model_spec(const ArgParser& args, const data::Dataset& train, uint64_t seed,
                         const std::string& checkpoint) {
  nn::ModelSpec ms;
  ms.arch = args.get_string("model");
  ms.in_channels = train.channels;
  ms.image_height = train.height;
  ms.image_width = train.width;
  ms.num_classes = train.num_classes();
  ms.shortcut = nn::parse_shortcut(args.get_string("shortcut"));
  ms.width = args.get_int("width", 0, 4096);
  ms.seed = seed;
  if (checkpoint.empty()) return ms;
  nn::MetadataReadOptions read_options;
  read_options.resolve_bit_config_file = false;  // only the architecture is wanted here
  const std::optional<nn::ModelSpec> recorded =
      nn::read_run_metadata(nn::load_checkpoint(checkpoint), checkpoint, read_options).model;
  if (!recorded) return ms;
  auto check = [&](const char* flag, const std::string& given, const std::string& stored) {
    if (args.given(flag) && given != stored)
      throw UsageError(fmt::format("--{} {} contradicts {}, which holds a model with {} {}; leave the flag out (the "
                                   "architecture comes from the checkpoint)",
                                   flag, given, checkpoint, flag, stored));
  };
  check("model", ms.arch, recorded->arch);
  check("width", std::to_string(ms.width), std::to_string(recorded->width));
  check("shortcut", std::string(nn::shortcut_name(ms.shortcut)), std::string(nn::shortcut_name(recorded->shortcut)));
  ms.arch = recorded->arch;
  ms.width = recorded->width;
  ms.shortcut = recorded->shortcut;
  ms.zero_init_residual = recorded->zero_init_residual;
  ms.graph = recorded->graph;  // a graph model (imported) is rebuilt from its recorded structure
  // Image shape and classes stay the data set's: a mismatch with the checkpoint is reported
  // when its weights are loaded, naming the layer.
  return ms;
}

std::string command_line(int argc, char** argv) {
  std::string line = "bitmix";
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool plain = !arg.empty() && arg.find_first_of(" \t\"'\\") == std::string_view::npos;
    line += plain ? fmt::format(" {}", arg) : fmt::format(" '{}'", arg);
  }
  return line;
}

nn::RunMetadata run_metadata(const nn::ModelSpec& spec, const data::DataSpec& data, const std::string& producer,
                             int argc, char** argv, uint64_t seed, const std::string& parent) {
  nn::RunMetadata run;
  run.model = spec;
  run.data.spec = data.to_string();
  run.provenance = nn::Provenance::current(producer, command_line(argc, argv), seed, parent);
  return run;
}

void add_training_options(ArgParser& args, const TrainingDefaults& d) {
  args.option("epochs", "N", "training epochs", std::to_string(d.epochs));
  args.option("batch", "B", "batch size", "128");
  args.option("lr", "LR", "peak learning rate of the weights (SGD, cosine schedule)", fmt::format("{:g}", d.lr));
  args.option("wd", "WD", "weight decay (not on BatchNorm, biases, quantizer parameters)", fmt::format("{:g}", d.wd));
  args.option("momentum", "M", "SGD momentum", "0.9");
  args.choice("schedule", {"cosine", "constant"}, "learning-rate schedule of the weights", "cosine");
  args.option("warmup", "EPOCHS", "linear warm-up of the weights' rate, in epochs", "0");
  args.choice("augment", {"auto", "none", "crop", "flip", "crop-flip"},
              "augmentation; auto = crop-flip for cifar10, none otherwise", "auto");
  args.option("pad-crop", "P", "padding of the random crop", "4");
  args.option("eval-batch", "B", "evaluation batch size", "256");
  args.flag("no-progress", "no progress bar");
}

nn::TrainerOptions training_options(const ArgParser& args, const data::DataSpec& data, uint64_t seed,
                                    std::string* augment_out) {
  nn::TrainerOptions o;
  o.epochs = static_cast<int>(args.get_int("epochs", 1, 100000));
  o.batch_size = args.get_int("batch", 2, 1 << 20);
  o.eval_batch_size = args.get_int("eval-batch", 1, 1 << 20);
  o.lr = static_cast<float>(args.get_double("lr", 0.0, 1e3));
  o.weight_decay = static_cast<float>(args.get_double("wd", 0.0, 1.0));
  o.momentum = static_cast<float>(args.get_double("momentum", 0.0, 0.999999));
  o.schedule = nn::parse_schedule_kind(args.get_string("schedule"));
  o.warmup_epochs = static_cast<float>(args.get_double("warmup", 0.0, static_cast<double>(o.epochs)));
  std::string augment = args.get_string("augment");
  if (augment == "auto") augment = data.kind == "cifar10" ? "crop-flip" : "none";
  if (augment == "crop" || augment == "crop-flip") o.augmentation.pad_crop = static_cast<int>(args.get_int("pad-crop", 1, 64));
  o.augmentation.horizontal_flip = augment == "flip" || augment == "crop-flip";
  o.seed = seed;
  o.progress = !args.get_flag("no-progress");
  if (augment_out != nullptr) *augment_out = augment;
  return o;
}

void load_initial_weights(nn::Module& model, const std::string& path, bool partial) {
  nn::LoadOptions lo;
  lo.allow_missing = lo.allow_unexpected = partial;
  const nn::LoadReport report = nn::load_model_state(model, nn::load_checkpoint(path), lo, path);
  std::cerr << fmt::format("initialized {} tensors from {}", report.loaded.size(), path);
  if (!report.missing.empty()) std::cerr << fmt::format("; {} not in the checkpoint", report.missing.size());
  if (!report.unexpected.empty()) std::cerr << fmt::format("; {} checkpoint entries ignored", report.unexpected.size());
  std::cerr << '\n';
}

}  // namespace bitmix::cli
