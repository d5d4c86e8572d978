// The trainer's files: the checkpoint (tensors + RunMetadata), resuming from one, log.csv and
// summary.json.
#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/nn/trainer.hpp"
#include "metadata_reader.hpp"
#include "weight_average.hpp"

namespace bitmix::nn {

void Trainer::set_run_metadata(RunMetadata run) {
  if (run.provenance.producer.empty()) run.provenance = run_.provenance;
  run_ = std::move(run);
}

RunMetadata Trainer::run_metadata() const {
  RunMetadata m = run_;
  const std::string spec = run_.data.spec;
  m.data = describe_data(train_set_, spec);
  m.data.test_images = test_set_ != nullptr ? test_set_->size() : 0;
  m.normalization = normalization_;
  TrainingState t;
  t.epoch = epoch_;
  t.step = step_;
  t.train_seconds = train_seconds_;
  t.options = options_;
  if (optimizer_) t.groups.push_back({"main", optimizer_->kind(), schedule_.options()});
  for (const ParameterGroup& g : groups_) t.groups.push_back({g.name, g.optimizer->kind(), g.schedule.options()});
  t.history = history_;
  t.partial = partial_;
  m.training = std::move(t);
  return m;
}

void Trainer::save_checkpoint(const std::filesystem::path& path) {
  build_optimizer();
  Checkpoint ck;
  nn::set_run_metadata(ck, run_metadata());
  if (averaged_.empty()) {
    add_model_state(ck, model_);
  } else {
    // The model entries hold what evaluate() measured (the averages); the trained weights go
    // beside them for resuming.
    {
      detail::AverageInModel averaged_weights([this] { swap_average_into_model(); });
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
  const std::string source = path.string();
  MetadataReadOptions read_options;
  read_options.resolve_bit_config_file = false;  // the quantization recipe plays no part in resuming
  const RunMetadata meta = read_run_metadata(ck, path, read_options);
  if (!meta.training)
    throw FormatError(fmt::format("checkpoint {}: metadata field 'training' is null: written by '{}', not by a trainer "
                                  "(nothing to resume)",
                                  source, meta.provenance.producer));
  const TrainingState& state = *meta.training;
  const TrainerOptions& o = state.options;
  if (o.seed != options_.seed || o.batch_size != options_.batch_size)
    throw ArgumentError(fmt::format("checkpoint {} was trained with seed {} and batch size {}; resuming with seed {} "
                                    "and batch size {} would not continue the same run",
                                    source, o.seed, o.batch_size, options_.seed, options_.batch_size));
  if (meta.data.name != train_set_.name || meta.data.train_images != train_set_.size())
    throw ArgumentError(fmt::format("checkpoint {} was trained on {} ({} images); resuming on {} ({} images) would "
                                    "not continue the same run",
                                    source, meta.data.name, meta.data.train_images, train_set_.name, train_set_.size()));
  if (o.ema_decay != options_.ema_decay)
    throw ArgumentError(fmt::format("checkpoint {} was trained with weight-average decay {}; resuming with {} would "
                                    "not continue the same run",
                                    source, o.ema_decay, options_.ema_decay));
  if (state.epoch > options_.epochs)
    throw ArgumentError(fmt::format("checkpoint {} is at epoch {}, beyond the {} epochs of this run", source, state.epoch,
                                    options_.epochs));
  const int64_t expected_step = static_cast<int64_t>(state.epoch) * batches_per_epoch() +
                                (state.partial ? state.partial->batches : 0);
  if (state.step != expected_step || (state.partial && state.partial->batches >= batches_per_epoch()))
    throw ArgumentError(fmt::format("checkpoint {} is at step {} of epoch {}{}; with {} batches per epoch this run "
                                    "would be at step {}: not the same run",
                                    source, state.step, state.epoch + (state.partial ? 1 : 0),
                                    state.partial ? fmt::format(" (after batch {})", state.partial->batches) : "",
                                    batches_per_epoch(), expected_step));
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
  history_ = state.history;
  partial_ = state.partial;
  epoch_ = state.epoch;
  step_ = state.step;
  train_seconds_ = state.train_seconds;
}

namespace {

// The quantization figures of summary.json (what the QAT tables are made from), from the
// BitConfig's totals where it has them.
void add_quantization_figures(detail::Json& q, const quant::BitConfig& config) {
  q["policy"] = config.policy.describe();
  q["summary"] = config.summary();
  const quant::BitTotals t = config.totals ? *config.totals : config.compute_totals();
  if (!t.macs || !t.bitops || !t.weight_bits || !t.params) return;
  q["macs"] = *t.macs;
  q["bitops"] = *t.bitops;
  q["weight_bits"] = *t.weight_bits;
  q["weight_bytes"] = static_cast<double>(*t.weight_bits) / 8.0;
  q["float_bitops"] = *t.macs * quant::kFloatBits * quant::kFloatBits;
  q["float_weight_bytes"] = static_cast<double>(*t.params) * 4.0;
}

}  // namespace

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
  const RunMetadata run = run_metadata();
  detail::Json summary = detail::run_metadata_json(run);
  summary.erase("format");
  summary.erase("metadata_version");
  if (run.quantization) add_quantization_figures(summary["quantization"], run.quantization->bit_config);
  summary["finished"] = finished;
  summary["checkpoint"] = (dir / "model.ckpt").string();
  if (!history_.empty()) {
    const EpochStats& last = history_.back();
    summary["final"] = detail::epoch_stats_to_json(last);
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
