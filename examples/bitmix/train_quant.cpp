#include "train_quant.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <utility>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/quant/calibrator.hpp"

namespace bitmix::cli {
namespace {

Shape image_shape(const nn::ModelSpec& spec) { return {spec.in_channels, spec.image_height, spec.image_width}; }

std::string human_bytes(double bytes) {
  if (bytes >= 1024.0 * 1024.0) return fmt::format("{:.2f} MiB", bytes / (1024.0 * 1024.0));
  return fmt::format("{:.1f} KiB", bytes / 1024.0);
}

// --first-last-bits: "8" (default), any of 1..8, 32 (keep them float), or "none" (not pinned:
// quantized like every other layer).
quant::BitPolicy parse_first_last(const ArgParser& args) {
  const std::string text = args.get_string("first-last-bits");
  if (text == "none") return quant::BitPolicy::none();
  const int64_t bits = args.get_int("first-last-bits", 1, quant::kFloatBits);
  if (bits > quant::kMaxBits && bits != quant::kFloatBits)
    throw UsageError(fmt::format("--first-last-bits '{}': expected an integer from 1 to 8, 32 (float) or none", text));
  return quant::BitPolicy{static_cast<int>(bits), static_cast<int>(bits)};
}

// --inq-steps, for a model with INQ weights (given without them it is a usage error).
void read_inq_steps(const ArgParser& args, nn::Module& model, QuantizationSetup& setup) {
  if (!nn::has_inq_quantizers(model, setup.image)) {
    if (args.given("inq-steps")) throw UsageError("--inq-steps applies to INQ weights (--quant inq)");
    return;
  }
  const std::string text = args.get_string("inq-steps");
  std::vector<double> steps;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const std::size_t comma = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, comma - begin);
    char* end = nullptr;
    const double f = std::strtod(item.c_str(), &end);
    if (item.empty() || end != item.c_str() + item.size() || !(f > 0.0 && f <= 1.0))
      throw UsageError(fmt::format("--inq-steps '{}': '{}' is not a fraction in (0, 1]", text, item));
    if (!steps.empty() && !(f > steps.back()))
      throw UsageError(fmt::format("--inq-steps '{}': the fractions must increase ({} after {})", text, f, steps.back()));
    steps.push_back(f);
    begin = comma + 1;
  }
  setup.inq_steps = std::move(steps);
  if (setup.inq_steps.back() < 1.0)
    std::cerr << fmt::format("note: --inq-steps ends at {}: part of the weights stays float, so the model cannot be "
                             "exported to integers\n",
                             setup.inq_steps.back());
}

}  // namespace

void add_quantization_options(ArgParser& args) {
  std::string schemes;
  for (const std::string& s : nn::quant_scheme_names()) schemes += (schemes.empty() ? "" : "|") + s;
  args.option("quant", "KIND",
              fmt::format("quantization-aware training with these quantizers: {} (see docs/quantization.md), or "
                          "WEIGHT/ACTIVATION kinds (e.g. sawb/lsq); needs --wbits and --abits",
                          schemes),
              "");
  args.option("wbits", "B", "QAT: weight bits of every layer (1-8; the first and last layers: --first-last-bits)", "");
  args.option("abits", "B", "QAT: input-activation bits of every layer (1-8)", "");
  args.option("first-last-bits", "B",
              "QAT with --wbits/--abits: bits of the first conv and the last linear (1-8, 32 = float, none = like "
              "the others)",
              "8");
  args.choice("w-granularity", {"per_channel", "per_tensor"}, "QAT with --wbits/--abits: weight scales", "per_channel");
  args.option("dsconv-block", "N",
              "QAT with --quant dsconv: input channels per DSConv block (one scale per block of each output "
              "channel's kernel)",
              "32");
  args.option("inq-steps", "F1,F2,..",
              "QAT with INQ weights (--quant inq): the growing fractions of each layer's weights frozen to "
              "power-of-two levels, one per stage of the epochs (increasing, ending at 1 for an integer export)",
              "0.5,0.75,0.875,1");
  args.option("bits", "FILE",
              "QAT with the per-layer bits and quantizers of this BitConfig file (written by the search); excludes "
              "--quant/--wbits/--abits/--first-last-bits/--w-granularity",
              "");
  args.option("calibrate", "N",
              "QAT: before training, calibrate the quantizers that start without state on N training batches; auto = "
              "8 batches for PACT clips only (LSQ steps and uniform ranges initialize from the first batch), 0 = none",
              "auto");
  args.choice("calibrate-method", {"mse", "min-max", "percentile", "aciq-laplace", "aciq-gaussian"},
              "QAT: calibration method of --calibrate", "mse");
}

QuantizationSetup apply_quantization_options(const ArgParser& args, nn::Module& model, const nn::ModelSpec& spec) {
  QuantizationSetup setup;
  const bool uniform_flags = args.given("quant") || args.given("wbits") || args.given("abits");
  const bool from_file = args.given("bits");
  if (from_file) {
    for (const char* flag : {"quant", "wbits", "abits", "first-last-bits", "w-granularity", "dsconv-block"})
      if (args.given(flag))
        throw UsageError(fmt::format("--bits and --{} exclude each other (the BitConfig file gives every layer's bits "
                                     "and quantizers)",
                                     flag));
  } else if (!uniform_flags) {
    for (const char* flag : {"first-last-bits", "w-granularity", "calibrate", "dsconv-block", "inq-steps"})
      if (args.given(flag)) throw UsageError(fmt::format("--{} applies to QAT runs (--quant/--wbits/--abits or --bits)", flag));
    if (args.given("calibrate-method")) throw UsageError("--calibrate-method applies to QAT runs with --calibrate");
    return setup;
  }
  setup.enabled = true;
  const Shape image = image_shape(spec);
  setup.image = image;

  if (from_file) {
    const std::string path = args.get_string("bits");
    setup.source = "--bits " + path;
    try {
      setup.config = quant::BitConfig::load(path);
      nn::annotate_bit_config(setup.config, model, image);
      nn::apply_bit_config(model, image, setup.config);
    } catch (const Error& e) {
      throw UsageError(fmt::format("--bits {}: {}", path, e.what()));
    }
    if (setup.config.model != spec.arch)
      std::cerr << fmt::format("note: {} was written for model '{}'; its layers match --model {}\n", path,
                               setup.config.model, spec.arch);
    read_inq_steps(args, model, setup);
    return setup;
  }

  if (!args.given("wbits") || !args.given("abits"))
    throw UsageError(fmt::format("--{} needs both --wbits and --abits", args.given("quant") ? "quant" : (args.given("wbits") ? "wbits" : "abits")));
  const std::string scheme_name = args.given("quant") ? args.get_string("quant") : "lsq";
  nn::QuantScheme scheme;
  try {
    scheme = nn::parse_quant_scheme(scheme_name);
  } catch (const ArgumentError& e) {
    throw UsageError(fmt::format("--quant: {}", e.what()));
  }
  nn::UniformBits bits(static_cast<int>(args.get_int("wbits", quant::kMinBits, quant::kMaxBits)),
                       static_cast<int>(args.get_int("abits", quant::kMinBits, quant::kMaxBits)), scheme.w_quant,
                       scheme.a_quant);
  bits.policy = parse_first_last(args);
  bits.w_granularity = quant::parse_granularity(args.get_string("w-granularity"));
  if (args.given("dsconv-block") && scheme.w_quant != quant::QuantizerKind::dsconv)
    throw UsageError(fmt::format("--dsconv-block applies to DSConv weights (--quant dsconv), not --quant {}", scheme_name));
  bits.w_block = args.get_int("dsconv-block", 1, int64_t{1} << 20);
  setup.source = fmt::format("--quant {} --wbits {} --abits {} --first-last-bits {} --w-granularity {}", scheme_name,
                             bits.w_bits, bits.a_bits, args.get_string("first-last-bits"),
                             args.get_string("w-granularity"));
  try {
    setup.config = nn::uniform_bit_config(model, image, spec.arch, bits);
    setup.config.notes = setup.source;
    nn::apply_bit_config(model, image, setup.config);
  } catch (const ArgumentError& e) {
    throw UsageError(fmt::format("--quant {} --wbits {} --abits {}: {}", scheme_name, bits.w_bits, bits.a_bits, e.what()));
  }
  read_inq_steps(args, model, setup);
  return setup;
}

const std::vector<nn::EpochStats>& fit_with_inq(const QuantizationSetup& setup, nn::Trainer& trainer,
                                                nn::Module& model, int epochs) {
  const auto stages = static_cast<int>(setup.inq_steps.size());
  if (epochs < stages)
    throw UsageError(fmt::format("--inq-steps has {} steps but --epochs is {}: every step needs at least one epoch",
                                 stages, epochs));
  for (int k = 0; k < stages; ++k) {
    const int end = static_cast<int>((static_cast<int64_t>(k) + 1) * epochs / stages);
    if (end <= trainer.epochs_done()) continue;  // a resumed run: the checkpoint holds the frozen state
    const double fraction = setup.inq_steps[static_cast<std::size_t>(k)];
    const quant::InqFreezeReport r = nn::inq_freeze(model, setup.image, fraction);
    std::cerr << fmt::format("INQ step {}/{}: {:.4g} % of the INQ weights frozen ({} of {}, {} new), epochs {} to {}\n",
                             k + 1, stages, 100.0 * fraction, r.frozen, r.total, r.newly_frozen,
                             trainer.epochs_done() + 1, end);
    trainer.fit(end);
  }
  return trainer.fit();
}

void freeze_inq_for_evaluation(const QuantizationSetup& setup, nn::Module& model) {
  if (setup.inq_steps.empty()) return;
  const quant::InqFreezeReport r = nn::inq_freeze(model, setup.image, setup.inq_steps.back());
  std::cerr << fmt::format("INQ: {} of {} weights frozen (--eval-only applies the last step)\n", r.frozen, r.total);
}

std::string QuantizationSetup::summary_line() const {
  const quant::BitTotals& t = *config.totals;
  const double float_bitops = static_cast<double>(*t.macs) * quant::kFloatBits * quant::kFloatBits;
  return fmt::format("bits: {}; {:.4g} GBitOPs/image (float32: {:.4g}); weights {} (float32: {})", config.summary(),
                     static_cast<double>(*t.bitops) / 1e9, float_bitops / 1e9,
                     human_bytes(static_cast<double>(*t.weight_bits) / 8.0),
                     human_bytes(static_cast<double>(*t.params) * 4.0));
}

void init_quantized_model(QuantizationSetup& setup, nn::Module& model, const nn::Checkpoint& checkpoint,
                          const std::string& source, bool allow_unexpected) {
  nn::LoadOptions lo;
  lo.allow_unexpected = allow_unexpected;
  const nn::QuantizedLoadReport r = nn::load_quantized_model_state(model, checkpoint, lo, source);
  setup.to_initialize = r.to_initialize;
  std::cerr << fmt::format("initialized {} tensors from {}; quantizers: {} restored, {} from their parameters alone, "
                           "{} to initialize from data",
                           r.model.loaded.size(), source, r.restored.size(), r.marked_initialized.size(),
                           r.to_initialize.size());
  if (!r.model.unexpected.empty()) std::cerr << fmt::format("; {} checkpoint entries ignored", r.model.unexpected.size());
  std::cerr << '\n';
}

void calibrate_if_asked(const ArgParser& args, QuantizationSetup& setup, nn::Module& model, const data::Dataset& train,
                        const data::Normalization& normalization, int64_t batch_size, uint64_t seed) {
  if (!setup.enabled) return;
  // auto: only the kinds without a data-driven initialization of their own (PACT's alpha starts
  // at 10, the paper's value for training from scratch). docs/quantization.md has the measurements.
  const bool automatic = args.get_string("calibrate") == "auto";
  const int64_t batches = automatic ? 8 : args.get_int("calibrate", 0, 1 << 20);
  if (batches == 0) return;
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = true;
  lo.normalization = normalization;
  lo.seed = seed;
  const data::BatchLoader loader(train, lo);
  nn::QatCalibrationOptions co;
  co.method.method = quant::parse_calibration_method(args.get_string("calibrate-method"));
  // Quantizers restored from --init keep their trained state.
  const bool from_checkpoint = !args.get_string("init").empty();
  for (const nn::LayerQuantizers& l : nn::attached_quantizers(model, Shape{train.channels, train.height, train.width})) {
    for (const auto& [q, slot] : {std::pair{l.weight, ".weight_transform"}, std::pair{l.input, ".input_transform"}}) {
      if (q == nullptr || (automatic && q->spec().kind != quant::QuantizerKind::pact)) continue;
      const std::string path = l.name + slot;
      if (from_checkpoint && std::find(setup.to_initialize.begin(), setup.to_initialize.end(), path) == setup.to_initialize.end())
        continue;
      co.only.push_back(path);
    }
  }
  if (co.only.empty()) {
    if (!automatic) std::cerr << "calibration: no quantizer left to calibrate (all restored from --init)\n";
    return;
  }
  const nn::CalibrationReport r = nn::calibrate_quantizers(model, loader, batches, co);
  std::cerr << fmt::format("calibrated {} quantizers ({}) on {} batches of {} training images; {} left to their own "
                           "initialization\n",
                           r.calibrated.size(), quant::to_string(co.method.method), r.batches, batch_size,
                           r.skipped.size());
}

void initialize_from_training_batch(const QuantizationSetup& setup, nn::Module& model, const data::Dataset& train,
                                    const data::Normalization& normalization, int64_t batch_size, uint64_t seed) {
  if (!setup.enabled) return;
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = true;
  lo.normalization = normalization;
  lo.seed = seed;
  const data::BatchLoader loader(train, lo);
  const bool was_training = model.training();
  model.eval();
  model.forward(loader.batch(0).images);
  model.train(was_training);
}

}  // namespace bitmix::cli
