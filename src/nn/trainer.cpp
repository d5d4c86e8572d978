#include "bitmix/nn/trainer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <csignal>
#include <cmath>
#include <iostream>
#include <optional>
#include <set>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/interrupt.hpp"
#include "bitmix/support/progress.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/data/test_time.hpp"
#include "bitmix/nn/functional.hpp"
#include "weight_average.hpp"

namespace bitmix::nn {

OptimizerKind parse_optimizer_kind(std::string_view text) {
  if (text == "sgd") return OptimizerKind::sgd;
  if (text == "adam") return OptimizerKind::adam;
  if (text == "adamw") return OptimizerKind::adamw;
  throw ArgumentError(fmt::format("optimizer '{}': expected sgd, adam or adamw", text));
}

std::string_view optimizer_kind_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::sgd: return "sgd";
    case OptimizerKind::adam: return "adam";
    case OptimizerKind::adamw: return "adamw";
  }
  return "unknown";
}

namespace {

bool all_finite(Module& model) {
  for (const NamedParameter& p : model.named_parameters())
    for (float v : p.parameter->value.values())
      if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace

Trainer::Trainer(Module& model, const data::Dataset& train_set, const data::Dataset* test_set, TrainerOptions options)
    : model_(model), train_set_(train_set), test_set_(test_set), options_(std::move(options)) {
  const TrainerOptions& o = options_;
  if (o.epochs < 1) throw ArgumentError(fmt::format("epochs = {}: expected at least 1", o.epochs));
  if (o.batch_size < 2) throw ArgumentError(fmt::format("batch size {}: expected at least 2 (batch norm)", o.batch_size));
  if (o.eval_batch_size < 1) throw ArgumentError(fmt::format("evaluation batch size {}: expected at least 1", o.eval_batch_size));
  if (o.eval_shift < 0 || o.eval_shift >= std::min(train_set.height, train_set.width))
    throw ArgumentError(fmt::format("test-time shift {}: expected 0 to {} pixels", o.eval_shift,
                                    std::min(train_set.height, train_set.width) - 1));
  if (!(o.ema_decay >= 0.0f && o.ema_decay < 1.0f))
    throw ArgumentError(fmt::format("weight-average decay {}: expected a value in [0, 1) (0 = no averaging)", o.ema_decay));
  if (!(o.label_smoothing >= 0.0f && o.label_smoothing < 1.0f))
    throw ArgumentError(fmt::format("label smoothing {}: expected a value in [0, 1)", o.label_smoothing));
  if (!(o.warmup_epochs >= 0.0f) || o.warmup_epochs > static_cast<float>(o.epochs))
    throw ArgumentError(fmt::format("warm-up of {} epochs: expected 0 to {}", o.warmup_epochs, o.epochs));
  if (train_set.size() < 2) throw ArgumentError(fmt::format("{}: the training set has {} images", train_set.name, train_set.size()));
  // The model must accept the dataset's images and produce one logit per class.
  const Shape image{1, train_set.channels, train_set.height, train_set.width};
  Shape out;
  try {
    out = model.output_shape(image);
  } catch (const ShapeError& e) {
    throw ShapeError(fmt::format("the model does not fit {} images {}: {}", train_set.name,
                                 shape_to_string({train_set.channels, train_set.height, train_set.width}), e.what()));
  }
  if (out.size() != 2 || out[1] != train_set.num_classes())
    throw ShapeError(fmt::format("the model outputs {} per image but {} has {} classes", shape_to_string(out),
                                 train_set.name, train_set.num_classes()));
  if (test_set != nullptr && (test_set->channels != train_set.channels || test_set->height != train_set.height ||
                              test_set->width != train_set.width || test_set->num_classes() != train_set.num_classes()))
    throw ShapeError(fmt::format("test set {} does not match the training set's image shape or classes", test_set->name));
  if (o.normalization.mean.empty()) {
    normalization_ = data::compute_normalization(train_set);
  } else {
    const auto channels = static_cast<std::size_t>(train_set.channels);
    if (o.normalization.mean.size() != channels || o.normalization.stddev.size() != channels)
      throw ArgumentError(fmt::format("input normalization with {} means and {} standard deviations for {} images "
                                      "with {} channels",
                                      o.normalization.mean.size(), o.normalization.stddev.size(), train_set.name,
                                      channels));
    normalization_ = o.normalization;
  }
  data::LoaderOptions lo;
  lo.batch_size = o.batch_size;
  lo.shuffle = true;
  lo.drop_last = false;
  lo.augmentation = o.augmentation;
  lo.normalization = normalization_;
  lo.seed = o.seed;
  train_loader_ = std::make_unique<data::BatchLoader>(train_set, lo);
  run_.provenance = Provenance::current("train", {}, o.seed);
}

Trainer::~Trainer() = default;

void Trainer::set_extra_loss(std::function<double()> term) { extra_loss_ = std::move(term); }

void Trainer::add_parameter_group(std::string name, std::unique_ptr<Optimizer> optimizer, LrSchedule schedule) {
  if (optimizer_) throw Error("Trainer: parameter groups must be added before fit() or resume()");
  if (name.empty() || name == "main" || name.find('/') != std::string::npos)
    throw ArgumentError(fmt::format("parameter group name '{}' must be non-empty, not 'main', without '/'", name));
  for (const ParameterGroup& g : groups_)
    if (g.name == name) throw ArgumentError(fmt::format("parameter group '{}' added twice", name));
  if (!optimizer) throw ArgumentError(fmt::format("parameter group '{}' has no optimizer", name));
  groups_.push_back({std::move(name), std::move(optimizer), std::move(schedule)});
}

void Trainer::set_step_hook(std::function<void(int64_t)> hook) { step_hook_ = std::move(hook); }

void Trainer::add_epoch_callback(std::function<void(const EpochStats&)> callback) {
  callbacks_.push_back(std::move(callback));
}

int64_t Trainer::batches_per_epoch() const { return train_loader_->num_batches(); }

Optimizer& Trainer::main_optimizer() {
  build_optimizer();
  return *optimizer_;
}

void Trainer::build_optimizer() {
  if (optimizer_) return;
  std::set<const Parameter*> claimed;
  for (const ParameterGroup& g : groups_)
    for (const NamedParameter& p : g.optimizer->parameters()) claimed.insert(p.parameter);
  std::vector<NamedParameter> main;
  for (const NamedParameter& p : model_.named_parameters())
    if (!claimed.count(p.parameter)) main.push_back(p);
  const TrainerOptions& o = options_;
  if (o.optimizer == OptimizerKind::sgd) {
    SgdOptions so;
    so.momentum = o.momentum;
    so.nesterov = o.nesterov;
    so.weight_decay = o.weight_decay;
    so.decay_all = o.decay_all;
    optimizer_ = std::make_unique<Sgd>(std::move(main), so);
  } else {
    AdamOptions ao;
    ao.beta1 = o.beta1;
    ao.beta2 = o.beta2;
    ao.eps = o.adam_eps;
    ao.weight_decay = o.weight_decay;
    ao.decoupled = o.optimizer == OptimizerKind::adamw;
    ao.decay_all = o.decay_all;
    optimizer_ = std::make_unique<Adam>(std::move(main), ao);
  }
  LrScheduleOptions so;
  so.kind = o.schedule;
  so.base_lr = o.lr;
  so.steps_per_epoch = batches_per_epoch();
  so.total_steps = so.steps_per_epoch * o.epochs;
  so.warmup_steps = static_cast<int64_t>(std::llround(double{o.warmup_epochs} * static_cast<double>(so.steps_per_epoch)));
  so.min_lr = o.min_lr;
  so.milestones = o.milestones;
  so.gamma = o.gamma;
  schedule_ = LrSchedule(so);
  init_average();
}

EvalResult Trainer::evaluate(const data::Dataset& dataset) {
  std::optional<detail::AverageInModel> averaged_weights;
  if (!averaged_.empty()) averaged_weights.emplace([this] { swap_average_into_model(); });
  data::LoaderOptions lo;
  lo.batch_size = options_.eval_batch_size;
  lo.normalization = normalization_;
  data::BatchLoader loader(dataset, lo);
  const bool was_training = model_.training();
  model_.eval();
  EvalResult result;
  double loss_sum = 0;
  int64_t correct = 0;
  data::Batch batch;
  const std::vector<data::TestTimeView> views = data::test_time_views(options_.eval_shift, options_.eval_flip);
  const float view_weight = 1.0f / static_cast<float>(views.size());
  const std::vector<float> pad_value = data::normalized_zero(normalization_);
  Tensor view, mean_logits;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    loader.fill_batch(b, batch);
    const Tensor* logits = nullptr;
    if (views.size() == 1) {
      logits = &model_.forward(batch.images);
    } else {
      for (std::size_t v = 0; v < views.size(); ++v) {
        data::make_test_time_view(batch.images, views[v], pad_value, view);
        // forward() returns a reference into the model, overwritten by the next call: accumulate.
        const Tensor& out = model_.forward(view);
        if (v == 0) mean_logits = Tensor(out.shape());
        float* mean = mean_logits.data();
        const float* x = out.data();
        for (int64_t i = 0; i < mean_logits.numel(); ++i) mean[i] += view_weight * x[i];
      }
      logits = &mean_logits;
    }
    const CrossEntropyResult ce = softmax_cross_entropy(*logits, batch.labels, 0.0f, nullptr);
    const int64_t n = static_cast<int64_t>(batch.labels.size());
    loss_sum += ce.loss * static_cast<double>(n);
    correct += ce.correct;
    result.images += n;
  }
  model_.train(was_training);
  if (result.images > 0) {
    result.loss = loss_sum / static_cast<double>(result.images);
    result.accuracy = static_cast<double>(correct) / static_cast<double>(result.images);
  }
  return result;
}

EpochStats Trainer::train_epoch() {
  const int epoch = epoch_ + 1;
  EpochStats stats;
  stats.epoch = epoch;

  model_.train();
  train_loader_->set_epoch(epoch_);
  const int64_t batches = train_loader_->num_batches();
  const int64_t images = train_loader_->num_images();
  std::unique_ptr<Progress> progress;
  if (options_.progress)
    progress = std::make_unique<Progress>(fmt::format("epoch {}/{}", epoch, options_.epochs), images, "img");
  data::Batch batch;
  Tensor grad_logits;
  // A resumed epoch continues from the batch and the sums where it was stopped.
  const PartialEpoch resumed = partial_.value_or(PartialEpoch{});
  partial_.reset();
  stats.lr = schedule_.lr(step_ - resumed.batches);  // the rate at the epoch's first step
  double loss_sum = resumed.loss_sum, extra_sum = resumed.extra_sum;
  int64_t correct = resumed.correct, seen = resumed.images;
  Stopwatch clock;
  for (int64_t b = resumed.batches; b < batches; ++b) {
    if (const int signal = stop_requested(); signal != 0) {
      if (progress) progress->finish("interrupted");
      if (b > 0) partial_ = PartialEpoch{b, loss_sum, extra_sum, correct, seen, resumed.seconds + clock.seconds()};
      stop_for_signal(signal, batches);
    }
    if (step_hook_) step_hook_(step_);
    train_loader_->fill_batch(b, batch);
    current_batch_ = &batch;
    const int64_t n = static_cast<int64_t>(batch.labels.size());
    optimizer_->zero_grad();
    for (ParameterGroup& g : groups_) g.optimizer->zero_grad();
    const Tensor& logits = model_.forward(batch.images);
    const CrossEntropyResult ce = softmax_cross_entropy(logits, batch.labels, options_.label_smoothing, &grad_logits);
    double extra = 0;
    if (std::isfinite(ce.loss)) {
      model_.backward(grad_logits);
      if (extra_loss_) extra = extra_loss_();
    }
    current_batch_ = nullptr;
    if (!std::isfinite(ce.loss) || !std::isfinite(extra)) {
      if (progress) progress->finish("stopped");
      const std::filesystem::path ckpt = options_.out_dir.empty() ? std::filesystem::path() : options_.out_dir / "model.ckpt";
      std::string where = epoch_ > 0 && !ckpt.empty()
                              ? fmt::format("the last good checkpoint is {} (end of epoch {})", ckpt.string(), epoch_)
                              : std::string("no checkpoint had been written yet");
      throw NonFiniteLossError(fmt::format(
          "training stopped at epoch {}, batch {}/{} (step {}): the {} is {} (learning rate {}); {}. Try a lower "
          "learning rate or a longer warm-up.",
          epoch, b + 1, batches, step_ + 1, std::isfinite(ce.loss) ? "extra loss term" : "loss",
          std::isfinite(ce.loss) ? extra : ce.loss, schedule_.lr(step_), where));
    }
    const float lr = schedule_.lr(step_);
    optimizer_->step(lr);
    for (ParameterGroup& g : groups_) g.optimizer->step(g.schedule.lr(step_));
    ++step_;
    update_average();
    loss_sum += (ce.loss + extra) * static_cast<double>(n);
    extra_sum += extra * static_cast<double>(n);
    correct += ce.correct;
    seen += n;
    if (progress)
      progress->update(seen, fmt::format("loss {:.4f} acc {:.2f}% lr {:.4g}", loss_sum / static_cast<double>(seen),
                                         100.0 * static_cast<double>(correct) / static_cast<double>(seen), lr));
  }
  stats.seconds = resumed.seconds + clock.seconds();
  stats.train_loss = loss_sum / static_cast<double>(seen);
  stats.extra_loss = extra_sum / static_cast<double>(seen);
  stats.train_accuracy = static_cast<double>(correct) / static_cast<double>(seen);
  stats.images_per_second = static_cast<double>(seen) / std::max(stats.seconds, 1e-9);
  if (progress)
    progress->finish(fmt::format("loss {:.4f} acc {:.2f}%", stats.train_loss, 100.0 * stats.train_accuracy));
  return stats;
}

void Trainer::stop_for_signal(int signal, int64_t batches) {
  std::filesystem::path ckpt;
  if (!options_.out_dir.empty()) {
    ckpt = options_.out_dir / "model.ckpt";
    save_checkpoint(ckpt);
  }
  const std::string name = signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : fmt::format("signal {}", signal);
  const int64_t done = partial_ ? partial_->batches : 0;
  throw TrainingInterrupted(
      fmt::format("interrupted by {} at epoch {}, after batch {}/{} (step {}); {}", name, epoch_ + 1, done, batches,
                  step_, ckpt.empty() ? std::string("no output directory: nothing was saved")
                                      : fmt::format("wrote the checkpoint {}", ckpt.string())),
      signal, ckpt);
}

const std::vector<EpochStats>& Trainer::fit(int until_epoch) {
  build_optimizer();
  model_.set_input_grad_needed(false);
  const int last = until_epoch > 0 ? std::min(until_epoch, options_.epochs) : options_.epochs;
  while (epoch_ < last) {
    EpochStats stats = train_epoch();
    train_seconds_ += stats.seconds;
    ++epoch_;
    if (!all_finite(model_))
      throw NonFiniteLossError(fmt::format("training stopped after epoch {}: a parameter became non-finite; {}", epoch_,
                                           epoch_ > 1 && !options_.out_dir.empty()
                                               ? fmt::format("the last good checkpoint is {} (epoch {})",
                                                             (options_.out_dir / "model.ckpt").string(), epoch_ - 1)
                                               : std::string("no checkpoint had been written yet")));
    if (test_set_ != nullptr) {
      const EvalResult ev = evaluate(*test_set_);
      stats.has_test = true;
      stats.test_loss = ev.loss;
      stats.test_accuracy = ev.accuracy;
    }
    history_.push_back(stats);
    if (options_.progress) {
      std::string line = fmt::format("epoch {}/{}: train loss {:.4f} acc {:.2f}%", stats.epoch, options_.epochs,
                                     stats.train_loss, 100.0 * stats.train_accuracy);
      if (stats.has_test)
        line += fmt::format(", test loss {:.4f} acc {:.2f}%", stats.test_loss, 100.0 * stats.test_accuracy);
      line += fmt::format(", {:.1f}s, {:.0f} img/s", stats.seconds, stats.images_per_second);
      std::cerr << line << '\n';
    }
    for (auto& callback : callbacks_) callback(stats);
    write_outputs(epoch_ == options_.epochs);
  }
  return history_;
}

}  // namespace bitmix::nn
