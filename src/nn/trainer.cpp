#include "bitmix/nn/trainer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/support/progress.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/core/version.hpp"
#include "bitmix/nn/functional.hpp"

namespace bitmix::nn {

using json = nlohmann::json;

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

json parse_object(const std::string& text, const char* what) {
  json j = json::parse(text.empty() ? std::string("{}") : text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw ArgumentError(fmt::format("{}: expected a JSON object, got '{}'", what, text));
  return j;
}

json stats_to_json(const EpochStats& s) {
  json j = {{"epoch", s.epoch},
            {"lr", s.lr},
            {"train_loss", s.train_loss},
            {"train_accuracy", s.train_accuracy},
            {"extra_loss", s.extra_loss},
            {"seconds", s.seconds},
            {"images_per_second", s.images_per_second}};
  if (s.has_test) {
    j["test_loss"] = s.test_loss;
    j["test_accuracy"] = s.test_accuracy;
  }
  return j;
}

EpochStats stats_from_json(const json& j) {
  EpochStats s;
  s.epoch = j.at("epoch").get<int>();
  s.lr = j.at("lr").get<float>();
  s.train_loss = j.at("train_loss").get<double>();
  s.train_accuracy = j.at("train_accuracy").get<double>();
  s.extra_loss = j.value("extra_loss", 0.0);
  s.seconds = j.at("seconds").get<double>();
  s.images_per_second = j.value("images_per_second", 0.0);
  if (j.contains("test_accuracy")) {
    s.has_test = true;
    s.test_loss = j.at("test_loss").get<double>();
    s.test_accuracy = j.at("test_accuracy").get<double>();
  }
  return s;
}

bool all_finite(Module& model) {
  for (const NamedParameter& p : model.named_parameters())
    for (float v : p.parameter->value.values())
      if (!std::isfinite(v)) return false;
  return true;
}

// Mirrors every row of an NCHW batch in place (the test-time flip).
void mirror_horizontally(Tensor& images) {
  const int64_t width = images.dim(-1);
  float* data = images.data();
  for (int64_t row = 0; row < images.numel(); row += width) std::reverse(data + row, data + row + width);
}

// out(y, x) = in(y + dy, x + dx) for an NCHW batch, with pad_value[c] outside the image: the
// same translation the training crop makes with offset (dy, dx).
void translate(const Tensor& in, int dy, int dx, const std::vector<float>& pad_value, Tensor& out) {
  const int64_t N = in.dim(0), C = in.dim(1), H = in.dim(2), W = in.dim(3);
  if (out.shape() != in.shape()) out = Tensor(in.shape());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const float pad = pad_value[static_cast<std::size_t>(c)];
      const float* src = in.data() + (n * C + c) * H * W;
      float* dst = out.data() + (n * C + c) * H * W;
      for (int64_t y = 0; y < H; ++y) {
        const int64_t sy = y + dy;
        for (int64_t x = 0; x < W; ++x) {
          const int64_t sx = x + dx;
          dst[y * W + x] = (sy < 0 || sy >= H || sx < 0 || sx >= W) ? pad : src[sy * W + sx];
        }
      }
    }
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
  parse_object(o.model_metadata, "model metadata");
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

void Trainer::init_average() {
  if (options_.ema_decay <= 0.0f || !averaged_.empty()) return;
  for (const NamedParameter& p : model_.named_parameters())
    averaged_.push_back({p.name, &p.parameter->value, p.parameter->value});
  for (const NamedBuffer& b : model_.named_buffers()) {
    const std::string_view name = b.name;
    const std::string_view local = name.substr(name.rfind('.') == std::string_view::npos ? 0 : name.rfind('.') + 1);
    if (local.starts_with("running_"))
      averaged_.push_back({b.name, &b.buffer->value, b.buffer->value});
  }
}

void Trainer::update_average() {
  if (averaged_.empty()) return;
  // step_ updates so far (1 after the first step).
  const double t = static_cast<double>(step_);
  const float d = static_cast<float>(std::min(double{options_.ema_decay}, (1.0 + t) / (10.0 + t)));
  for (AveragedTensor& a : averaged_) {
    float* avg = a.average.data();
    const float* live = a.live->data();
    for (int64_t i = 0; i < a.average.numel(); ++i) avg[i] = d * avg[i] + (1.0f - d) * live[i];
  }
}

void Trainer::swap_average_into_model() {
  // Element-wise, so every tensor keeps its storage (layers may hold pointers into it).
  for (AveragedTensor& a : averaged_) std::swap_ranges(a.average.data(), a.average.data() + a.average.numel(), a.live->data());
}

namespace {
// Puts the averaged weights into the model for the lifetime of the guard, and back afterwards
// (also when evaluation throws).
class AverageInModel {
 public:
  explicit AverageInModel(std::function<void()> swap) : swap_(std::move(swap)) { swap_(); }
  ~AverageInModel() { swap_(); }
  AverageInModel(const AverageInModel&) = delete;
  AverageInModel& operator=(const AverageInModel&) = delete;

 private:
  std::function<void()> swap_;
};
}  // namespace

EvalResult Trainer::evaluate(const data::Dataset& dataset) {
  std::optional<AverageInModel> averaged_weights;
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
  // Test-time views: translations (dy, dx), each also mirrored with eval_flip.
  std::vector<std::pair<int, int>> shifts{{0, 0}};
  if (options_.eval_shift > 0) {
    shifts.emplace_back(options_.eval_shift, options_.eval_shift);
    shifts.emplace_back(-options_.eval_shift, -options_.eval_shift);
  }
  const int mirrors = options_.eval_flip ? 2 : 1;
  const float view_weight = 1.0f / static_cast<float>(shifts.size() * static_cast<std::size_t>(mirrors));
  std::vector<float> pad_value;  // pixel value 0 after normalization, per channel
  for (std::size_t c = 0; c < normalization_.mean.size(); ++c)
    pad_value.push_back(-normalization_.mean[c] / normalization_.stddev[c]);
  Tensor view, mean_logits;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    loader.fill_batch(b, batch);
    const Tensor* logits = nullptr;
    if (shifts.size() == 1 && mirrors == 1) {
      logits = &model_.forward(batch.images);
    } else {
      for (std::size_t s = 0; s < shifts.size(); ++s) {
        translate(batch.images, shifts[s].first, shifts[s].second, pad_value, view);
        for (int m = 0; m < mirrors; ++m) {
          if (m == 1) mirror_horizontally(view);
          // forward() returns a reference into the model, overwritten by the next call: accumulate.
          const Tensor& out = model_.forward(view);
          if (s == 0 && m == 0) mean_logits = Tensor(out.shape());
          float* mean = mean_logits.data();
          const float* v = out.data();
          for (int64_t i = 0; i < mean_logits.numel(); ++i) mean[i] += view_weight * v[i];
        }
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
  stats.lr = schedule_.lr(step_);
  model_.train();
  train_loader_->set_epoch(epoch_);
  const int64_t batches = train_loader_->num_batches();
  const int64_t images = train_loader_->num_images();
  std::unique_ptr<Progress> progress;
  if (options_.progress)
    progress = std::make_unique<Progress>(fmt::format("epoch {}/{}", epoch, options_.epochs), images, "img");
  data::Batch batch;
  Tensor grad_logits;
  double loss_sum = 0, extra_sum = 0;
  int64_t correct = 0, seen = 0;
  Stopwatch clock;
  for (int64_t b = 0; b < batches; ++b) {
    train_loader_->fill_batch(b, batch);
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
  stats.seconds = clock.seconds();
  stats.train_loss = loss_sum / static_cast<double>(seen);
  stats.extra_loss = extra_sum / static_cast<double>(seen);
  stats.train_accuracy = static_cast<double>(correct) / static_cast<double>(seen);
  stats.images_per_second = static_cast<double>(seen) / std::max(stats.seconds, 1e-9);
  if (progress)
    progress->finish(fmt::format("loss {:.4f} acc {:.2f}%", stats.train_loss, 100.0 * stats.train_accuracy));
  return stats;
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

std::string Trainer::metadata_json() const {
  const TrainerOptions& o = options_;
  json opts = {{"epochs", o.epochs},
               {"batch_size", o.batch_size},
               {"optimizer", optimizer_kind_name(o.optimizer)},
               {"lr", o.lr},
               {"weight_decay", o.weight_decay},
               {"decay_all", o.decay_all},
               {"momentum", o.momentum},
               {"nesterov", o.nesterov},
               {"beta1", o.beta1},
               {"beta2", o.beta2},
               {"schedule", schedule_kind_name(o.schedule)},
               {"warmup_epochs", o.warmup_epochs},
               {"min_lr", o.min_lr},
               {"milestones", o.milestones},
               {"gamma", o.gamma},
               {"label_smoothing", o.label_smoothing},
               {"ema_decay", o.ema_decay},
               {"pad_crop", o.augmentation.pad_crop},
               {"horizontal_flip", o.augmentation.horizontal_flip},
               {"alternate_flip", o.augmentation.alternate_flip},
               {"eval_flip", o.eval_flip},
               {"eval_shift", o.eval_shift},
               {"seed", o.seed}};
  json groups = json::object();
  groups["main"] = {{"optimizer", parse_object(optimizer_->describe(), "optimizer")},
                    {"schedule", parse_object(schedule_.describe(), "schedule")}};
  for (const ParameterGroup& g : groups_)
    groups[g.name] = {{"optimizer", parse_object(g.optimizer->describe(), "optimizer")},
                      {"schedule", parse_object(g.schedule.describe(), "schedule")}};
  json history = json::array();
  for (const EpochStats& s : history_) history.push_back(stats_to_json(s));
  json meta = {{"format", "bitmix checkpoint"},
               {"bitmix_version", std::string(version())},
               {"epoch", epoch_},
               {"step", step_},
               {"threads", num_threads()},
               {"isa", std::string(isa_name(active_isa()))},
               {"train_seconds", train_seconds_},
               {"dataset", {{"name", train_set_.name},
                            {"channels", train_set_.channels},
                            {"height", train_set_.height},
                            {"width", train_set_.width},
                            {"classes", train_set_.num_classes()},
                            {"train_images", train_set_.size()},
                            {"test_images", test_set_ != nullptr ? test_set_->size() : 0}}},
               {"normalization", {{"mean", normalization_.mean}, {"std", normalization_.stddev}}},
               {"model", parse_object(o.model_metadata, "model metadata")},
               {"options", opts},
               {"groups", groups},
               {"history", history}};
  return meta.dump(2);
}

void Trainer::save_checkpoint(const std::filesystem::path& path) {
  build_optimizer();
  Checkpoint ck;
  ck.metadata = metadata_json();
  if (averaged_.empty()) {
    add_model_state(ck, model_);
  } else {
    // The model entries hold what evaluate() measured (the averages); the trained weights go
    // beside them for resuming.
    {
      AverageInModel averaged_weights([this] { swap_average_into_model(); });
      add_model_state(ck, model_);
    }
    for (const AveragedTensor& a : averaged_) ck.add(CheckpointTensorKind::extra, "live/" + a.name, *a.live);
  }
  add_optimizer_state(ck, *optimizer_, "main");
  for (ParameterGroup& g : groups_) add_optimizer_state(ck, *g.optimizer, g.name);
  nn::save_checkpoint(path, ck);
}

void Trainer::resume(const std::filesystem::path& path) {
  build_optimizer();
  const Checkpoint ck = load_checkpoint(path);
  json meta = json::parse(ck.metadata, nullptr, false);
  const std::string source = path.string();
  if (meta.is_discarded() || !meta.is_object() || !meta.contains("epoch") || !meta.contains("step") ||
      !meta.contains("history") || !meta.contains("options"))
    throw FormatError(fmt::format("checkpoint {}: metadata is not a trainer checkpoint's (missing epoch, step, "
                                  "history or options)",
                                  source));
  try {
    const json& o = meta.at("options");
    if (o.at("seed").get<uint64_t>() != options_.seed || o.at("batch_size").get<int64_t>() != options_.batch_size)
      throw ArgumentError(fmt::format("checkpoint {} was trained with seed {} and batch size {}; resuming with seed {} "
                                      "and batch size {} would not continue the same run",
                                      source, o.at("seed").get<uint64_t>(), o.at("batch_size").get<int64_t>(),
                                      options_.seed, options_.batch_size));
    if (meta.contains("dataset")) {
      const json& d = meta.at("dataset");
      if (d.at("name").get<std::string>() != train_set_.name || d.at("train_images").get<int64_t>() != train_set_.size())
        throw ArgumentError(fmt::format("checkpoint {} was trained on {} ({} images); resuming on {} ({} images) would "
                                        "not continue the same run",
                                        source, d.at("name").get<std::string>(), d.at("train_images").get<int64_t>(),
                                        train_set_.name, train_set_.size()));
    }
    const float ema_decay = o.value("ema_decay", 0.0f);
    if (ema_decay != options_.ema_decay)
      throw ArgumentError(fmt::format("checkpoint {} was trained with weight-average decay {}; resuming with {} would "
                                      "not continue the same run",
                                      source, ema_decay, options_.ema_decay));
    const int epoch = meta.at("epoch").get<int>();
    if (epoch < 0 || epoch > options_.epochs)
      throw ArgumentError(fmt::format("checkpoint {} is at epoch {}, beyond the {} epochs of this run", source, epoch,
                                      options_.epochs));
    // With averaging, every averaged tensor needs its trained value: check them all before
    // changing anything.
    std::vector<const Tensor*> live_values;
    for (const AveragedTensor& a : averaged_) {
      const CheckpointEntry* e = ck.find(CheckpointTensorKind::extra, "live/" + a.name);
      if (e == nullptr)
        throw FormatError(fmt::format("checkpoint {}: no trained value 'live/{}' beside the weight average", source, a.name));
      if (e->value.shape() != a.live->shape())
        throw FormatError(fmt::format("checkpoint {}: 'live/{}' has shape {}, the model expects {}", source, a.name,
                                      shape_to_string(e->value.shape()), shape_to_string(a.live->shape())));
      live_values.push_back(&e->value);
    }
    load_model_state(model_, ck, {}, source);
    for (std::size_t i = 0; i < averaged_.size(); ++i) {
      AveragedTensor& a = averaged_[i];
      std::copy(a.live->data(), a.live->data() + a.live->numel(), a.average.data());
      std::copy(live_values[i]->data(), live_values[i]->data() + live_values[i]->numel(), a.live->data());
    }
    load_optimizer_state(*optimizer_, ck, "main", source);
    for (ParameterGroup& g : groups_) load_optimizer_state(*g.optimizer, ck, g.name, source);
    history_.clear();
    for (const json& h : meta.at("history")) history_.push_back(stats_from_json(h));
    epoch_ = epoch;
    step_ = meta.at("step").get<int64_t>();
    train_seconds_ = meta.value("train_seconds", 0.0);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("checkpoint {}: malformed metadata: {}", source, e.what()));
  }
}

void Trainer::write_outputs(bool finished) {
  if (options_.out_dir.empty()) return;
  const std::filesystem::path& dir = options_.out_dir;
  // Checkpoint first: log.csv and summary.json never describe an epoch the checkpoint lacks.
  save_checkpoint(dir / "model.ckpt");
  std::string csv = "epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds\n";
  for (const EpochStats& s : history_)
    csv += fmt::format("{},{:.6g},{:.6f},{:.6f},{},{},{:.3f}\n", s.epoch, s.lr, s.train_loss, s.train_accuracy,
                       s.has_test ? fmt::format("{:.6f}", s.test_loss) : std::string(),
                       s.has_test ? fmt::format("{:.6f}", s.test_accuracy) : std::string(), s.seconds);
  write_file_atomic(dir / "log.csv", csv);
  json summary = json::parse(metadata_json());
  summary.erase("format");
  summary["finished"] = finished;
  summary["checkpoint"] = (dir / "model.ckpt").string();
  if (!history_.empty()) {
    const EpochStats& last = history_.back();
    summary["final"] = stats_to_json(last);
    double best = -1;
    int best_epoch = 0;
    for (const EpochStats& s : history_)
      if (s.has_test && s.test_accuracy > best) {
        best = s.test_accuracy;
        best_epoch = s.epoch;
      }
    if (best >= 0) summary["best_test"] = {{"epoch", best_epoch}, {"test_accuracy", best}};
    double images = 0;
    for (const EpochStats& s : history_) images += s.images_per_second * s.seconds;
    summary["train_images_per_second"] = train_seconds_ > 0 ? images / train_seconds_ : 0.0;
  }
  write_file_atomic(dir / "summary.json", summary.dump(2) + "\n");
}

}  // namespace bitmix::nn
