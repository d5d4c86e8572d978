#include "metadata_reader.hpp"

#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "core/strict_json.hpp"

namespace bitmix::nn::detail {

Json parse_metadata_text(std::string_view text, std::string_view source) {
  // Strict: a key written twice is an error (not the last one silently winning), and so is a
  // number beyond a double.
  return bitmix::detail::parse_json_strict<Json>(text, fmt::format("{} metadata", source));
}

namespace {

std::string describe(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::object: return "an object";
    case Json::value_t::array: return fmt::format("an array of {}", j.size());
    case Json::value_t::string: return fmt::format("the string \"{}\"", j.get_ref<const std::string&>());
    case Json::value_t::boolean: return j.get<bool>() ? "true" : "false";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float: return j.dump();
    default: return "an unsupported value";
  }
}

}  // namespace

std::string MetadataReader::child_path(std::string_view key) const {
  return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
}

void MetadataReader::fail(const std::string& path, std::string_view expected, const Json* got) const {
  if (got == nullptr)
    throw FormatError(fmt::format("{}: metadata field '{}' is missing: expected {}", source_, path, expected));
  throw FormatError(fmt::format("{}: metadata field '{}': expected {}, got {}", source_, path.empty() ? "(top level)" : path,
                                expected, describe(*got)));
}

bool MetadataReader::has(std::string_view key) const { return value_->is_object() && value_->contains(key); }

bool MetadataReader::is_null(std::string_view key) const { return has(key) && value_->at(key).is_null(); }

const Json& MetadataReader::need(std::string_view key, std::string_view expected) const {
  if (!value_->is_object()) fail(path_, "an object", value_);
  const auto it = value_->find(key);
  if (it == value_->end()) fail(child_path(key), expected, nullptr);
  return *it;
}

MetadataReader MetadataReader::object(std::string_view key, std::string_view expected) const {
  const Json& j = need(key, expected);
  if (!j.is_object()) fail(child_path(key), expected, &j);
  return MetadataReader(j, child_path(key), source_);
}

std::vector<MetadataReader> MetadataReader::objects(std::string_view key) const {
  const Json& j = need(key, "an array of objects");
  if (!j.is_array()) fail(child_path(key), "an array of objects", &j);
  std::vector<MetadataReader> out;
  for (std::size_t i = 0; i < j.size(); ++i) {
    const std::string path = fmt::format("{}[{}]", child_path(key), i);
    if (!j[i].is_object()) fail(path, "an object", &j[i]);
    out.emplace_back(j[i], path, source_);
  }
  return out;
}

std::string MetadataReader::string(std::string_view key) const {
  const Json& j = need(key, "a string");
  if (!j.is_string()) fail(child_path(key), "a string", &j);
  return j.get<std::string>();
}

bool MetadataReader::boolean(std::string_view key) const {
  const Json& j = need(key, "true or false");
  if (!j.is_boolean()) fail(child_path(key), "true or false", &j);
  return j.get<bool>();
}

int64_t MetadataReader::integer(std::string_view key, int64_t min, int64_t max) const {
  const std::string expected = min == std::numeric_limits<int64_t>::min() && max == std::numeric_limits<int64_t>::max()
                                   ? std::string("an integer")
                                   : fmt::format("an integer from {} to {}", min, max);
  const Json& j = need(key, expected);
  if (j.is_number_unsigned()) {
    const auto v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(max) || (min > 0 && v < static_cast<uint64_t>(min))) fail(child_path(key), expected, &j);
    return static_cast<int64_t>(v);
  }
  if (!j.is_number_integer()) fail(child_path(key), expected, &j);
  const auto v = j.get<int64_t>();
  if (v < min || v > max) fail(child_path(key), expected, &j);
  return v;
}

uint64_t MetadataReader::unsigned64(std::string_view key) const {
  const Json& j = need(key, "a non-negative integer");
  if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<int64_t>() >= 0))
    fail(child_path(key), "a non-negative integer", &j);
  return j.get<uint64_t>();
}

double MetadataReader::number(std::string_view key) const {
  const Json& j = need(key, "a finite number");
  if (!j.is_number() || !std::isfinite(j.get<double>())) fail(child_path(key), "a finite number", &j);
  return j.get<double>();
}

float MetadataReader::real(std::string_view key) const {
  const Json& j = need(key, "a finite number in float range");
  if (!j.is_number()) fail(child_path(key), "a finite number in float range", &j);
  const double v = j.get<double>();
  if (!std::isfinite(v) || std::fabs(v) > double{std::numeric_limits<float>::max()})
    fail(child_path(key), "a finite number in float range", &j);
  return static_cast<float>(v);
}

std::vector<float> MetadataReader::reals(std::string_view key) const {
  const Json& j = need(key, "an array of numbers");
  if (!j.is_array()) fail(child_path(key), "an array of numbers", &j);
  std::vector<float> out;
  for (std::size_t i = 0; i < j.size(); ++i) {
    const double v = j[i].is_number() ? j[i].get<double>() : std::numeric_limits<double>::quiet_NaN();
    if (!std::isfinite(v) || std::fabs(v) > double{std::numeric_limits<float>::max()})
      fail(fmt::format("{}[{}]", child_path(key), i), "a finite number in float range", &j[i]);
    out.push_back(static_cast<float>(v));
  }
  return out;
}

std::vector<int> MetadataReader::integers(std::string_view key, int min, int max) const {
  const std::string expected = fmt::format("an array of integers from {} to {}", min, max);
  const Json& j = need(key, expected);
  if (!j.is_array()) fail(child_path(key), expected, &j);
  std::vector<int> out;
  for (std::size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number_integer() || j[i].get<int64_t>() < min || j[i].get<int64_t>() > max)
      fail(fmt::format("{}[{}]", child_path(key), i), fmt::format("an integer from {} to {}", min, max), &j[i]);
    out.push_back(static_cast<int>(j[i].get<int64_t>()));
  }
  return out;
}

std::vector<std::string> MetadataReader::strings(std::string_view key) const {
  const Json& j = need(key, "an array of strings");
  if (!j.is_array()) fail(child_path(key), "an array of strings", &j);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_string()) fail(fmt::format("{}[{}]", child_path(key), i), "a string", &j[i]);
    out.push_back(j[i].get<std::string>());
  }
  return out;
}

// ---- Field layouts shared by the current and the legacy reader.

Json epoch_stats_to_json(const EpochStats& s) {
  Json j = {{"epoch", s.epoch},
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

EpochStats epoch_stats_from_json(const MetadataReader& r, bool legacy) {
  EpochStats s;
  auto number = [&](std::string_view key) {
    return legacy ? r.value_or(key, 0.0, [&](std::string_view k) { return r.number(k); }) : r.number(key);
  };
  s.epoch = static_cast<int>(r.integer("epoch", 1, std::numeric_limits<int>::max()));
  s.lr = r.real("lr");
  s.train_loss = r.number("train_loss");
  s.train_accuracy = r.number("train_accuracy");
  s.extra_loss = number("extra_loss");
  s.seconds = r.number("seconds");
  s.images_per_second = number("images_per_second");
  // Epochs without a test set have neither test field.
  if (r.has("test_accuracy") || r.has("test_loss")) {
    s.has_test = true;
    s.test_loss = r.number("test_loss");
    s.test_accuracy = r.number("test_accuracy");
  }
  return s;
}

Json trainer_options_to_json(const TrainerOptions& o) {
  return {{"epochs", o.epochs},
          {"batch_size", o.batch_size},
          {"eval_batch_size", o.eval_batch_size},
          {"optimizer", optimizer_kind_name(o.optimizer)},
          {"lr", o.lr},
          {"weight_decay", o.weight_decay},
          {"decay_all", o.decay_all},
          {"momentum", o.momentum},
          {"nesterov", o.nesterov},
          {"beta1", o.beta1},
          {"beta2", o.beta2},
          {"adam_eps", o.adam_eps},
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
}

TrainerOptions trainer_options_from_json(const MetadataReader& r, bool legacy) {
  TrainerOptions o;
  // Fields every writer so far has written are required; the others only in the current layout.
  auto real = [&](std::string_view key, float fallback) {
    return legacy ? r.value_or(key, fallback, [&](std::string_view k) { return r.real(k); }) : r.real(key);
  };
  auto flag = [&](std::string_view key, bool fallback) {
    return legacy ? r.value_or(key, fallback, [&](std::string_view k) { return r.boolean(k); }) : r.boolean(key);
  };
  auto integer = [&](std::string_view key, int64_t fallback, int64_t min, int64_t max) {
    return legacy ? r.value_or(key, fallback, [&](std::string_view k) { return r.integer(k, min, max); })
                  : r.integer(key, min, max);
  };
  constexpr int64_t int_max = std::numeric_limits<int>::max();
  o.epochs = static_cast<int>(r.integer("epochs", 1, int_max));
  o.batch_size = r.integer("batch_size", 2, std::numeric_limits<int64_t>::max());
  o.eval_batch_size = integer("eval_batch_size", o.eval_batch_size, 1, std::numeric_limits<int64_t>::max());
  try {
    o.optimizer = legacy && !r.has("optimizer") ? o.optimizer : parse_optimizer_kind(r.string("optimizer"));
    o.schedule = legacy && !r.has("schedule") ? o.schedule : parse_schedule_kind(r.string("schedule"));
  } catch (const ArgumentError& e) {
    throw FormatError(fmt::format("{}: metadata field '{}': {}", r.source(), r.path(), e.what()));
  }
  o.lr = real("lr", o.lr);
  o.weight_decay = real("weight_decay", o.weight_decay);
  o.decay_all = flag("decay_all", o.decay_all);
  o.momentum = real("momentum", o.momentum);
  o.nesterov = flag("nesterov", o.nesterov);
  o.beta1 = real("beta1", o.beta1);
  o.beta2 = real("beta2", o.beta2);
  o.adam_eps = real("adam_eps", o.adam_eps);
  o.warmup_epochs = real("warmup_epochs", o.warmup_epochs);
  o.min_lr = real("min_lr", o.min_lr);
  if (!legacy || r.has("milestones")) o.milestones = r.integers("milestones", 1, std::numeric_limits<int>::max());
  o.gamma = real("gamma", o.gamma);
  o.label_smoothing = real("label_smoothing", o.label_smoothing);
  o.ema_decay = real("ema_decay", o.ema_decay);
  o.augmentation.pad_crop = static_cast<int>(integer("pad_crop", 0, 0, 1 << 20));
  o.augmentation.horizontal_flip = flag("horizontal_flip", false);
  o.augmentation.alternate_flip = flag("alternate_flip", false);
  o.eval_flip = flag("eval_flip", false);
  o.eval_shift = static_cast<int>(integer("eval_shift", 0, 0, 1 << 20));
  o.seed = r.unsigned64("seed");
  return o;
}

Json schedule_to_json(const LrScheduleOptions& s) {
  return {{"kind", schedule_kind_name(s.kind)},     {"base_lr", s.base_lr},   {"total_steps", s.total_steps},
          {"steps_per_epoch", s.steps_per_epoch},   {"warmup_steps", s.warmup_steps},
          {"warmup_start_factor", s.warmup_start_factor}, {"min_lr", s.min_lr}, {"milestones", s.milestones},
          {"gamma", s.gamma}};
}

LrScheduleOptions schedule_from_json(const MetadataReader& r) {
  LrScheduleOptions s;
  try {
    s.kind = parse_schedule_kind(r.string("kind"));
  } catch (const ArgumentError& e) {
    throw FormatError(fmt::format("{}: metadata field '{}': {}", r.source(), r.child_path("kind"), e.what()));
  }
  s.base_lr = r.real("base_lr");
  s.total_steps = r.integer("total_steps", 0);
  s.steps_per_epoch = r.integer("steps_per_epoch", 0);
  s.warmup_steps = r.integer("warmup_steps", 0);
  s.warmup_start_factor = r.real("warmup_start_factor");
  s.min_lr = r.real("min_lr");
  s.milestones = r.integers("milestones", 0, std::numeric_limits<int>::max());
  s.gamma = r.real("gamma");
  return s;
}

ModelSpec model_spec_from_metadata(const MetadataReader& parent, std::string_view key,
                                   std::initializer_list<std::string_view> other_keys) {
  const MetadataReader m = parent.object(key);
  try {
    auto spec = m.value();
    for (const std::string_view other : other_keys) spec.erase(std::string(other));
    return model_spec_from_json(spec.dump());
  } catch (const FormatError& e) {
    throw FormatError(fmt::format("{}: metadata field '{}': {}", parent.source(), m.path(), e.what()));
  }
}

quant::BitConfig bit_config_from_metadata(const MetadataReader& parent, std::string_view key) {
  const MetadataReader b = parent.object(key);
  return quant::BitConfig::parse(b.value().dump(), fmt::format("{} (metadata field '{}')", parent.source(), b.path()));
}

data::Normalization normalization_from_json(const MetadataReader& r) {
  data::Normalization n;
  n.mean = r.reals("mean");
  n.stddev = r.reals("std");
  return n;
}

}  // namespace bitmix::nn::detail
