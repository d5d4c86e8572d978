#pragma once
// The options of a training run and its per-epoch statistics: what nn::Trainer takes and what a
// checkpoint's training state (nn::TrainingState in run_metadata.hpp) records.

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

#include "bitmix/data/loader.hpp"
#include "bitmix/nn/optimizer.hpp"

namespace bitmix::nn {

enum class OptimizerKind { sgd, adam, adamw };
OptimizerKind parse_optimizer_kind(std::string_view text);  // "sgd" | "adam" | "adamw"
std::string_view optimizer_kind_name(OptimizerKind kind);

struct TrainerOptions {
  int epochs = 1;
  int64_t batch_size = 128;
  int64_t eval_batch_size = 256;
  // Test-time augmentation: evaluate() classifies each image by the mean logits of several views
  // of it (a standard short-schedule trick; costs evaluation time only, never training time).
  // The views are the image itself plus, with eval_shift > 0, the image translated by
  // (+eval_shift, +eval_shift) and (-eval_shift, -eval_shift) pixels (zero padding in pixel
  // space, as the training crop); with eval_flip, every one of these views and its mirror image.
  bool eval_flip = false;
  int eval_shift = 0;

  OptimizerKind optimizer = OptimizerKind::sgd;
  float lr = 0.1f;
  float weight_decay = 5e-4f;
  bool decay_all = false;  // also decay BatchNorm parameters and biases
  float momentum = 0.9f;   // SGD
  bool nesterov = false;   // SGD
  float beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;  // Adam / AdamW

  ScheduleKind schedule = ScheduleKind::cosine;
  float warmup_epochs = 0.0f;  // linear warm-up (may be fractional)
  float min_lr = 0.0f;
  std::vector<int> milestones;  // step schedule
  float gamma = 0.1f;

  float label_smoothing = 0.0f;
  // Exponential moving average of the weights (0 = off): after every step,
  // average = d * average + (1 - d) * weight with d = min(ema_decay, (1 + t) / (10 + t)) at
  // step t (the ramp keeps the average from remembering the initial weights). It covers every
  // model parameter and the BatchNorm running statistics (buffers named "running_*", which
  // belong with the weights they were measured on); other buffers (quantizer state, flags) are
  // used as trained. evaluate() and the model entries of the checkpoint use the averages, so
  // what is measured is what --init, export and deployment load; the trained weights are kept
  // beside them ("live/<name>") for resuming.
  float ema_decay = 0.0f;
  data::Augmentation augmentation;
  // Input normalization; empty = computed from the training set. Fine-tuning from a checkpoint
  // passes the checkpoint's, so the weights see the inputs they were trained on.
  data::Normalization normalization;
  uint64_t seed = 0;

  std::filesystem::path out_dir;  // log.csv, summary.json, model.ckpt; empty = write nothing
  bool progress = true;           // progress bar on stderr
};

struct EpochStats {
  int epoch = 0;  // 1-based
  float lr = 0.0f;
  double train_loss = 0, train_accuracy = 0;
  double extra_loss = 0;  // mean of the extra term over the epoch
  bool has_test = false;
  double test_loss = 0, test_accuracy = 0;
  double seconds = 0;
  double images_per_second = 0;
};

}  // namespace bitmix::nn
