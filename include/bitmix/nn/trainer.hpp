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
// Every checkpoint carries a RunMetadata (run_metadata.hpp): what set_run_metadata gave (model
// spec, data spec, quantization, provenance) with the data, normalization and training state
// filled in by the trainer.
//
// A non-finite loss stops training with NonFiniteLossError; the checkpoint of the last
// completed epoch is left as it was. A stop request (bitmix::stop_requested(), set by the
// SIGINT/SIGTERM handlers of bitmix/core/interrupt.hpp) is honoured before the next step: the
// checkpoint is written with the epoch's progress so far and fit() throws TrainingInterrupted;
// resuming from that checkpoint continues the epoch at the same batch, bit for bit.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/data/dataset.hpp"
#include "bitmix/data/loader.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/nn/optimizer.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "bitmix/nn/training_options.hpp"

namespace bitmix::nn {

class NonFiniteLossError : public Error {
 public:
  using Error::Error;
};

// A run stopped by a stop request (bitmix/core/interrupt.hpp: SIGINT, SIGTERM) at a step
// boundary. When the options name an output directory, the checkpoint there was written first
// and holds the stopped epoch's progress: resume() from it continues exactly where the run
// stopped, with the numbers of an uninterrupted run.
class TrainingInterrupted : public Error {
 public:
  TrainingInterrupted(const std::string& message, int signal, std::filesystem::path checkpoint)
      : Error(message), signal_(signal), checkpoint_(std::move(checkpoint)) {}
  int signal() const { return signal_; }
  const std::filesystem::path& checkpoint() const { return checkpoint_; }  // empty: nothing written

 private:
  int signal_;
  std::filesystem::path checkpoint_;
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
  // Called at the start of every step with its index (0-based from the start of the run, also
  // after resume()), before the batch's forward pass: for state that must be a function of the
  // step so that a resumed run reproduces it (the search's temperature and sampling noise).
  void set_step_hook(std::function<void(int64_t step)> hook);
  // Describes the run in every checkpoint and summary.json: the model spec, the --data string,
  // the quantization recipe and the provenance are taken from `run`; its data shape and counts,
  // normalization and training state are replaced by the trainer's own. Without it (or with an
  // empty provenance.producer): no model spec / provenance "train" of this process.
  void set_run_metadata(RunMetadata run);
  // What the next checkpoint's metadata will be.
  RunMetadata run_metadata() const;

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
  // The batch of the training step in progress (null outside a step): for an extra loss term
  // that evaluates the model again on the same images (AdaQAT's finite differences).
  const data::Batch* current_batch() const { return current_batch_; }
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
  void write_outputs(bool finished);
  [[noreturn]] void stop_for_signal(int signal, int64_t batches);
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
  RunMetadata run_;
  data::Normalization normalization_;
  std::unique_ptr<data::BatchLoader> train_loader_;
  std::unique_ptr<Optimizer> optimizer_;
  LrSchedule schedule_;
  std::vector<ParameterGroup> groups_;
  std::function<double()> extra_loss_;
  std::function<void(int64_t)> step_hook_;
  std::vector<std::function<void(const EpochStats&)>> callbacks_;
  std::vector<EpochStats> history_;
  int epoch_ = 0;
  int64_t step_ = 0;
  std::optional<PartialEpoch> partial_;  // the progress of epoch epoch_ + 1 when stopped part-way
  const data::Batch* current_batch_ = nullptr;
  double train_seconds_ = 0;
};

}  // namespace bitmix::nn
