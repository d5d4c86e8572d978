#pragma once
// The training loop, shared by `bitmix train`, QAT fine-tuning and the bitwidth search.
//
// Per epoch: shuffled (and augmented) batches from data::BatchLoader, forward, softmax
// cross-entropy, backward, optional extra loss term (added after the backward pass, e.g. the
// complexity penalty of a search), one step of every optimizer; then evaluation on the test
// set, per-epoch callbacks, a line of log.csv, summary.json and an atomic checkpoint.
//
// Resuming from a checkpoint written at the end of epoch e gives exactly the numbers of an
// uninterrupted run with the same options and thread count: the batches of an epoch depend
// only on (seed, epoch), and the checkpoint holds the parameters, buffers, every optimizer's
// state, the step and the history.
//
// A non-finite loss stops training with NonFiniteLossError; the checkpoint of the last
// completed epoch is left as it was.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/data/dataset.hpp"
#include "bitmix/data/loader.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/nn/optimizer.hpp"

namespace bitmix::nn {

class NonFiniteLossError : public Error {
 public:
  using Error::Error;
};

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
  // JSON object text merged into the checkpoint metadata and summary.json under "model"
  // (architecture, dataset), so that a checkpoint says what it holds.
  std::string model_metadata = "{}";
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

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
  int64_t images = 0;
};

struct ParameterGroup {
  std::string name;
  std::unique_ptr<Optimizer> optimizer;
  LrSchedule schedule;
};

class Trainer {
 public:
  // The datasets must outlive the trainer. test_set may be null (no evaluation).
  Trainer(Module& model, const data::Dataset& train_set, const data::Dataset* test_set, TrainerOptions options);
  ~Trainer();

  // An extra objective term evaluated after each backward pass: returns its value (added to
  // the batch loss) and must add its gradient into the .grad of the parameters it depends on.
  void set_extra_loss(std::function<double()> term);
  // An extra parameter group with its own optimizer and schedule (e.g. search strengths with
  // Adam while the weights use SGD). Its parameters are removed from the main group.
  void add_parameter_group(std::string name, std::unique_ptr<Optimizer> optimizer, LrSchedule schedule);
  void add_epoch_callback(std::function<void(const EpochStats&)> callback);

  // Restores a checkpoint written by a trainer with the same model and groups; fit() then
  // continues after its epoch.
  void resume(const std::filesystem::path& checkpoint);

  // Trains from the current epoch to options.epochs, or only until epoch `until_epoch` when it
  // is positive (a job that stops early and is resumed later runs the same schedule). Returns
  // the statistics of every epoch so far (including those restored by resume).
  const std::vector<EpochStats>& fit(int until_epoch = 0);
  EvalResult evaluate(const data::Dataset& dataset);

  int epochs_done() const { return epoch_; }
  int64_t steps_done() const { return step_; }
  const std::vector<EpochStats>& history() const { return history_; }
  const data::Normalization& normalization() const { return normalization_; }
  Optimizer& main_optimizer();
  const LrSchedule& main_schedule() const { return schedule_; }
  int64_t batches_per_epoch() const;

  // Writes the checkpoint (parameters, buffers, optimizer states, step, history) atomically.
  void save_checkpoint(const std::filesystem::path& path);

 private:
  void build_optimizer();
  EpochStats train_epoch();
  std::string metadata_json() const;
  void write_outputs(bool finished);
  // Weight averaging (options_.ema_decay > 0).
  void init_average();
  void update_average();
  void swap_average_into_model();  // exchanges the averages and the model's values (an involution)

  struct AveragedTensor {
    std::string name;
    Tensor* live;
    Tensor average;
  };
  std::vector<AveragedTensor> averaged_;

  Module& model_;
  const data::Dataset& train_set_;
  const data::Dataset* test_set_;
  TrainerOptions options_;
  data::Normalization normalization_;
  std::unique_ptr<data::BatchLoader> train_loader_;
  std::unique_ptr<Optimizer> optimizer_;
  LrSchedule schedule_;
  std::vector<ParameterGroup> groups_;
  std::function<double()> extra_loss_;
  std::vector<std::function<void(const EpochStats&)>> callbacks_;
  std::vector<EpochStats> history_;
  int epoch_ = 0;
  int64_t step_ = 0;
  double train_seconds_ = 0;
};

}  // namespace bitmix::nn
