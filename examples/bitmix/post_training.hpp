#pragma once
// What `bitmix quantize` (PTQ) and `bitmix allocate` share: the float checkpoint they start
// from, the calibration flags, the calibration and sensitivity image sets (drawn disjointly
// from one seeded permutation of the training set, so that `quantize --seed S --calib-images N`
// calibrates on exactly the images `allocate --seed S --calib-images N` calibrated its
// measurements on, and never on the sensitivity images), and a test-set evaluation.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/data/dataset.hpp"
#include "bitmix/data/loader.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/nn/ptq.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "bitmix/search/sensitivity.hpp"
#include "cli.hpp"

namespace bitmix::cli {

// A trained float checkpoint (bitmix train without QAT flags).
struct FloatCheckpoint {
  std::string path;
  nn::Checkpoint checkpoint;
  nn::RunMetadata metadata;
  nn::ModelSpec spec;
  Shape image_shape() const { return {spec.in_channels, spec.image_height, spec.image_width}; }
  // A new model holding the checkpoint's weights (strictly: every tensor present).
  std::unique_ptr<nn::Module> make_model() const;
};
// FormatError naming the file when it records no zoo model or is already quantized.
FloatCheckpoint load_float_checkpoint(const std::string& path);

// --data (default: the checkpoint's; no --train-subset: the image sets are drawn from the whole
// training set). Loads the data set and checks it fits the model (UsageError otherwise).
data::DatasetSplits load_checkpoint_data(const ArgParser& args, const FloatCheckpoint& ckpt, std::string* spec_out);

// --calib-images, --calibrator, --percentile, --calib-batch.
void add_calibration_options(ArgParser& args, const std::string& default_images);
nn::PtqOptions ptq_options(const ArgParser& args);  // without bias correction

struct PostTrainingData {
  std::vector<Tensor> calibration;       // normalized, --calib-batch images per batch
  search::LabelledBatches sensitivity;   // empty when no sensitivity images were asked for
  int64_t calibration_images = 0, sensitivity_images = 0;
  uint64_t seed = 0;
  // "calibration: training images p[0, 1024), sensitivity: p[1024, 2048) of the permutation p of
  // the 60000 training images drawn with seed 1"
  std::string description;
};
// UsageError when the two sets together need more images than the training set has.
PostTrainingData draw_post_training_data(const data::Dataset& train, const data::Normalization& normalization,
                                         int64_t calibration_images, int64_t sensitivity_images, uint64_t seed,
                                         int64_t batch_size);

struct TestResult {
  double accuracy = 0;
  double loss = 0;
  int64_t images = 0;
};
// Top-1 accuracy and mean cross-entropy of `model` (evaluation mode) on `test`; with `label`, a
// progress bar so named.
TestResult evaluate_model(nn::Module& model, const data::Dataset& test, const data::Normalization& normalization,
                          int64_t batch_size, const std::string& label = {});

}  // namespace bitmix::cli
