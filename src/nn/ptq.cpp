// Post-training quantization: see include/bitmix/nn/ptq.hpp.
#include "bitmix/nn/ptq.hpp"

#include <fmt/format.h>

#include <memory>
#include <optional>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/quantization.hpp"

namespace bitmix::nn {

using quant::QuantizerKind;

quant::BitConfig ptq_bit_config(quant::BitConfig config) {
  for (quant::LayerBits& entry : config.layers) {
    if (entry.w_quant != QuantizerKind::float_bypass) {
      entry.w_quant = QuantizerKind::symmetric;
      entry.w_granularity = quant::Granularity::per_channel;
    }
    if (entry.a_quant != QuantizerKind::float_bypass) entry.a_quant = QuantizerKind::uniform;
  }
  return config;
}

void calibrate_weight_quantizer(QuantizerTransform& quantizer, const Tensor& weight,
                                const quant::CalibrationOptions& options) {
  if (!quantizer.quantizer().accepts_range())
    throw ArgumentError(fmt::format("{}: takes no range, so it cannot be calibrated on the weights",
                                    quantizer.quantizer().describe()));
  quant::Calibrator calibrator(options, quantizer.quantizer());
  calibrator.observe(weight);
  calibrator.apply(quantizer.quantizer());
}

namespace {

// A copy of a quantizer transform with the same spec and state.
std::unique_ptr<QuantizerTransform> clone(QuantizerTransform& source) {
  auto copy = std::make_unique<QuantizerTransform>(source.spec());
  const std::vector<Parameter*> from_p = source.parameters(), to_p = copy->parameters();
  const std::vector<Buffer*> from_b = source.buffers(), to_b = copy->buffers();
  for (std::size_t i = 0; i < from_p.size() && i < to_p.size(); ++i) to_p[i]->value = from_p[i]->value;
  for (std::size_t i = 0; i < from_b.size() && i < to_b.size(); ++i) to_b[i]->value = from_b[i]->value;
  copy->set_training(source.training());
  return copy;
}

// Stands in for a layer's input quantizer during the bias-correction pass: quantizes like it,
// and accumulates the mean of what the layer's weights multiply: per input feature (Linear) or
// per (input channel, ky, kx) over every output position, zero padding included (Conv2d).
class InputMeanRecorder final : public TensorTransform {
 public:
  InputMeanRecorder(std::unique_ptr<QuantizerTransform> inner, const Conv2dOptions* conv)
      : inner_(std::move(inner)), conv_(conv != nullptr ? std::optional<Conv2dOptions>(*conv) : std::nullopt) {}
  std::string kind() const override { return "ptq-input-mean"; }
  const Tensor& forward(const Tensor& x) override {
    const Tensor& y = inner_ != nullptr ? inner_->forward(x) : x;
    accumulate(y);
    return y;
  }
  const Tensor& backward(const Tensor& /*x*/, const Tensor& grad_output) override { return grad_output; }

  std::unique_ptr<QuantizerTransform> release() { return std::move(inner_); }
  // The mean per input position of the weight, [in features] or [Cin, kh, kw] flattened.
  std::vector<double> mean() const {
    std::vector<double> m(sums_.size());
    for (std::size_t i = 0; i < m.size(); ++i) m[i] = count_ > 0 ? sums_[i] / static_cast<double>(count_) : 0.0;
    return m;
  }

 private:
  void accumulate(const Tensor& y) {
    if (!conv_) {
      const int64_t n = y.dim(0), f = y.numel() / n;
      sums_.resize(static_cast<std::size_t>(f), 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < f; ++j) sums_[static_cast<std::size_t>(j)] += static_cast<double>(y[i * f + j]);
      count_ += n;
      return;
    }
    const Conv2dOptions& o = *conv_;
    const int64_t n = y.dim(0), c = y.dim(1), h = y.dim(2), w = y.dim(3);
    const int64_t oh = (h + 2 * o.pad_h - o.kernel_h) / o.stride_h + 1;
    const int64_t ow = (w + 2 * o.pad_w - o.kernel_w) / o.stride_w + 1;
    sums_.resize(static_cast<std::size_t>(c * o.kernel_h * o.kernel_w), 0.0);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t ch = 0; ch < c; ++ch) {
        const float* plane = y.data() + (b * c + ch) * h * w;
        for (int64_t ky = 0; ky < o.kernel_h; ++ky)
          for (int64_t kx = 0; kx < o.kernel_w; ++kx) {
            double s = 0;
            for (int64_t r = 0; r < oh; ++r) {
              const int64_t iy = r * o.stride_h + ky - o.pad_h;
              if (iy < 0 || iy >= h) continue;
              for (int64_t q = 0; q < ow; ++q) {
                const int64_t ix = q * o.stride_w + kx - o.pad_w;
                if (ix >= 0 && ix < w) s += static_cast<double>(plane[iy * w + ix]);
              }
            }
            sums_[static_cast<std::size_t>((ch * o.kernel_h + ky) * o.kernel_w + kx)] += s;
          }
      }
    count_ += n * oh * ow;
  }

  std::unique_ptr<QuantizerTransform> inner_;
  std::optional<Conv2dOptions> conv_;
  std::vector<double> sums_;
  int64_t count_ = 0;
};

// The BatchNorm2d that normalizes a bias-free convolution's output, by the zoo's naming:
// "...convN" -> "...bnN", a Sequential's "k" -> "k+1" (the projection shortcut "shortcut.0").
BatchNorm2d* following_batch_norm(Module& model, const std::string& name, int64_t channels) {
  const std::size_t dot = name.rfind('.');
  const std::string parent = dot == std::string::npos ? "" : name.substr(0, dot + 1);
  const std::string last = dot == std::string::npos ? name : name.substr(dot + 1);
  std::string candidate;
  if (last.rfind("conv", 0) == 0) {
    candidate = parent + "bn" + last.substr(4);
  } else if (!last.empty() && last.find_first_not_of("0123456789") == std::string::npos) {
    candidate = parent + std::to_string(std::stoll(last) + 1);
  } else {
    return nullptr;
  }
  auto* bn = dynamic_cast<BatchNorm2d*>(model.find(candidate));
  return bn != nullptr && bn->channels() == channels ? bn : nullptr;
}

TransformSlots& slots_of(const LayerInfo& info) {
  if (info.conv != nullptr) return *info.conv;
  if (info.linear != nullptr) return *info.linear;
  throw Error(fmt::format("{}: not a Conv2d or Linear", info.name));
}

void correct_biases(Module& model, const Shape& image_shape, std::span<const Tensor> batches, PtqReport& report) {
  struct Slot {
    LayerInfo info;
    QuantizerTransform* weight;
    InputMeanRecorder* recorder;
  };
  std::vector<Slot> slots;
  for (const LayerInfo& info : model.quantizable_layers(image_shape)) {
    TransformSlots* s = &slots_of(info);
    auto* wq = dynamic_cast<QuantizerTransform*>(s->weight_transform());
    if (wq == nullptr) continue;
    auto* xq = dynamic_cast<QuantizerTransform*>(s->input_transform());
    auto recorder = std::make_unique<InputMeanRecorder>(xq != nullptr ? clone(*xq) : nullptr,
                                                        info.conv != nullptr ? &info.conv->options() : nullptr);
    InputMeanRecorder* raw = recorder.get();
    s->set_input_transform(std::move(recorder));
    slots.push_back({info, wq, raw});
  }
  // Put the input quantizers back whatever happens.
  struct Restore {
    std::vector<Slot>& slots;
    ~Restore() {
      for (Slot& slot : slots) {
        slots_of(slot.info).set_input_transform(slot.recorder->release());
      }
    }
  } restore{slots};
  for (const Tensor& batch : batches) model.forward(batch);

  for (Slot& slot : slots) {
    const Tensor& w = slot.info.conv != nullptr ? slot.info.conv->weight().value : slot.info.linear->weight().value;
    const Tensor qw = slot.weight->quantizer().forward(w);
    const std::vector<double> mean = slot.recorder->mean();
    const int64_t out = w.dim(0), per_out = w.numel() / out;
    const int64_t groups = slot.info.conv != nullptr ? slot.info.conv->options().groups : 1;
    const int64_t out_per_group = out / groups;
    std::vector<float> shift(static_cast<std::size_t>(out));
    for (int64_t o = 0; o < out; ++o) {
      // The input positions this output channel's group reads start at group * per_out.
      const int64_t first = (o / out_per_group) * per_out;
      double e = 0;
      for (int64_t k = 0; k < per_out; ++k)
        e += (static_cast<double>(qw[o * per_out + k]) - static_cast<double>(w[o * per_out + k])) * mean[static_cast<std::size_t>(first + k)];
      shift[static_cast<std::size_t>(o)] = static_cast<float>(e);
    }
    Parameter* bias = slot.info.conv != nullptr ? slot.info.conv->bias() : slot.info.linear->bias();
    if (bias != nullptr) {
      for (int64_t o = 0; o < out; ++o) bias->value[o] -= shift[static_cast<std::size_t>(o)];
      report.bias_corrected.push_back(slot.info.name);
      continue;
    }
    BatchNorm2d* bn = slot.info.conv != nullptr ? following_batch_norm(model, slot.info.name, out) : nullptr;
    if (bn == nullptr) {
      report.not_corrected.push_back(slot.info.name);
      continue;
    }
    for (int64_t o = 0; o < out; ++o) bn->running_mean().value[o] += shift[static_cast<std::size_t>(o)];
    report.bias_corrected.push_back(slot.info.name);
  }
}

}  // namespace

PtqReport quantize_post_training(Module& model, const Shape& image_shape, const quant::BitConfig& config,
                                 std::span<const Tensor> batches, const PtqOptions& options) {
  if (batches.empty()) throw ArgumentError("post-training quantization: no calibration batches (expected at least one)");
  apply_bit_config(model, image_shape, ptq_bit_config(config));
  model.eval();
  PtqReport report;
  report.batches = static_cast<int64_t>(batches.size());
  for (const LayerQuantizers& q : attached_quantizers(model, image_shape)) {
    if (q.weight == nullptr) continue;
    auto* conv = dynamic_cast<Conv2d*>(q.layer);
    const Tensor& w = conv != nullptr ? conv->weight().value : dynamic_cast<Linear&>(*q.layer).weight().value;
    calibrate_weight_quantizer(*q.weight, w, options.weights);
    report.calibrated.push_back(q.name + ".weight_transform");
  }
  QatCalibrationOptions activations;
  activations.method = options.activations;
  activations.weights = false;
  const CalibrationReport calibrated = calibrate_quantizers(model, batches, activations);
  for (const std::string& path : calibrated.calibrated) report.calibrated.push_back(path);
  if (options.bias_correction) correct_biases(model, image_shape, batches, report);
  model.eval();
  return report;
}

}  // namespace bitmix::nn
