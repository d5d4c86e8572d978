#include "post_training.hpp"

#include <fmt/format.h>

#include <numeric>
#include <optional>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/support/progress.hpp"

namespace bitmix::cli {

std::unique_ptr<nn::Module> FloatCheckpoint::make_model() const {
  std::unique_ptr<nn::Module> model = nn::make_model(spec);
  nn::load_model_state(*model, checkpoint, {}, path);
  model->eval();
  return model;
}

FloatCheckpoint load_float_checkpoint(const std::string& path) {
  FloatCheckpoint out;
  out.path = path;
  out.checkpoint = nn::load_checkpoint(path);
  nn::MetadataReadOptions read_options;
  read_options.resolve_bit_config_file = false;
  out.metadata = nn::read_run_metadata(out.checkpoint, path, read_options);
  if (!out.metadata.model)
    throw FormatError(fmt::format("{}: metadata field 'model' is null: the checkpoint holds a model outside the zoo, "
                                  "which cannot be rebuilt",
                                  path));
  if (out.metadata.quantization)
    throw FormatError(fmt::format("{}: already quantized ({}); give the float checkpoint it came from (bitmix train "
                                  "without QAT flags)",
                                  path, out.metadata.quantization->source));
  out.spec = *out.metadata.model;
  return out;
}

data::DatasetSplits load_checkpoint_data(const ArgParser& args, const FloatCheckpoint& ckpt, std::string* spec_out) {
  std::string text = args.get_string("data");
  if (text.empty()) text = ckpt.metadata.data.spec.empty() ? "fashion-mnist" : ckpt.metadata.data.spec;
  const data::DataSpec spec = data::parse_data_spec(text);
  data::DatasetSplits splits = data::load_dataset(spec);
  if (splits.train.channels != ckpt.spec.in_channels || splits.train.height != ckpt.spec.image_height ||
      splits.train.width != ckpt.spec.image_width || splits.train.num_classes() != ckpt.spec.num_classes)
    throw UsageError(fmt::format("--data {}: {}x{}x{} images in {} classes, but {} holds a model of {}x{}x{} images in "
                                 "{} classes",
                                 spec.to_string(), splits.train.channels, splits.train.height, splits.train.width,
                                 splits.train.num_classes(), ckpt.path, ckpt.spec.in_channels, ckpt.spec.image_height,
                                 ckpt.spec.image_width, ckpt.spec.num_classes));
  if (spec_out != nullptr) *spec_out = spec.to_string();
  return splits;
}

void add_calibration_options(ArgParser& args, const std::string& default_images) {
  args.option("calib-images", "N", "training images the activation ranges are calibrated on", default_images);
  args.choice("calibrator", {"mse", "percentile"},
              "activation range: the clip minimizing the quantization MSE, or a percentile of |x| (docs/allocation.md "
              "compares them)",
              "mse");
  args.option("percentile", "P", "--calibrator percentile: percent of the values kept inside the range", "99.99");
  args.option("calib-batch", "B", "images per calibration (and sensitivity) batch", "256");
}

nn::PtqOptions ptq_options(const ArgParser& args) {
  nn::PtqOptions o;
  o.activations.method = quant::parse_calibration_method(args.get_string("calibrator"));
  o.activations.percentile = args.get_double("percentile", 50.000001, 100.0);
  return o;
}

namespace {
data::Dataset gather(const data::Dataset& from, const std::vector<int64_t>& indices) {
  data::Dataset out;
  out.name = from.name;
  out.channels = from.channels;
  out.height = from.height;
  out.width = from.width;
  out.class_names = from.class_names;
  out.images.reserve(indices.size() * static_cast<std::size_t>(from.image_numel()));
  for (int64_t i : indices) {
    const auto image = from.image(i);
    out.images.insert(out.images.end(), image.begin(), image.end());
    out.labels.push_back(from.labels[static_cast<std::size_t>(i)]);
  }
  return out;
}
}  // namespace

PostTrainingData draw_post_training_data(const data::Dataset& train, const data::Normalization& normalization,
                                         int64_t calibration_images, int64_t sensitivity_images, uint64_t seed,
                                         int64_t batch_size) {
  if (calibration_images + sensitivity_images > train.size())
    throw UsageError(fmt::format("--calib-images {} and --sens-images {} need {} training images; the set has {}",
                                 calibration_images, sensitivity_images, calibration_images + sensitivity_images,
                                 train.size()));
  // Fisher-Yates with the run's seed: the first images are the calibration set, the next ones
  // the sensitivity set, so the two never overlap.
  std::vector<int64_t> order(static_cast<std::size_t>(train.size()));
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed ^ 0x9e3779b97f4a7c15ULL);
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  const auto take = [&](int64_t begin, int64_t count) {
    return gather(train, std::vector<int64_t>(order.begin() + begin, order.begin() + begin + count));
  };
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.normalization = normalization;
  PostTrainingData out;
  out.calibration_images = calibration_images;
  out.sensitivity_images = sensitivity_images;
  out.seed = seed;
  if (calibration_images > 0) {
    const data::Dataset calib = take(0, calibration_images);
    const data::BatchLoader loader(calib, lo);
    for (int64_t b = 0; b < loader.num_batches(); ++b) out.calibration.push_back(loader.batch(b).images);
  }
  if (sensitivity_images > 0) {
    const data::Dataset sens = take(calibration_images, sensitivity_images);
    const data::BatchLoader loader(sens, lo);
    for (int64_t b = 0; b < loader.num_batches(); ++b) {
      data::Batch batch = loader.batch(b);
      out.sensitivity.images.push_back(std::move(batch.images));
      out.sensitivity.labels.push_back(std::move(batch.labels));
    }
  }
  out.description = fmt::format(
      "calibration: training images p[0, {}), sensitivity: p[{}, {}) of the permutation p of the {} training images "
      "drawn with seed {}",
      calibration_images, calibration_images, calibration_images + sensitivity_images, train.size(), seed);
  return out;
}

TestResult evaluate_model(nn::Module& model, const data::Dataset& test, const data::Normalization& normalization,
                          int64_t batch_size, const std::string& label) {
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.normalization = normalization;
  const data::BatchLoader loader(test, lo);
  model.eval();
  TestResult r;
  int64_t correct = 0;
  double loss = 0;
  data::Batch batch;
  std::optional<Progress> progress;
  if (!label.empty()) progress.emplace(label, loader.num_batches(), "batch");
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    loader.fill_batch(b, batch);
    const Tensor& logits = model.forward(batch.images);
    const nn::CrossEntropyResult ce = nn::softmax_cross_entropy(logits, batch.labels, 0.0f, nullptr);
    correct += ce.correct;
    loss += ce.loss * static_cast<double>(batch.labels.size());
    r.images += static_cast<int64_t>(batch.labels.size());
    if (progress) progress->update(b + 1);
  }
  if (progress) progress->finish();
  r.accuracy = static_cast<double>(correct) / static_cast<double>(r.images);
  r.loss = loss / static_cast<double>(r.images);
  return r;
}

}  // namespace bitmix::cli
