// The trainer's exponential moving average of the weights (TrainerOptions::ema_decay).
#include <algorithm>
#include <string_view>

#include "bitmix/nn/trainer.hpp"

namespace bitmix::nn {

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

}  // namespace bitmix::nn
