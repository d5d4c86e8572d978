// INQ over a model (bitmix/nn/quantization.hpp): the freezing step of every `inq` weight
// quantizer, applied to its layer's weight.

#include <fmt/format.h>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/quantization.hpp"

namespace bitmix::nn {
namespace {

const Tensor& weight_tensor(Module& layer) {
  if (auto* conv = dynamic_cast<Conv2d*>(&layer)) return conv->weight().value;
  return dynamic_cast<Linear&>(layer).weight().value;
}

}  // namespace

bool has_inq_quantizers(Module& model, const Shape& image_shape) {
  for (const LayerQuantizers& q : attached_quantizers(model, image_shape))
    if (q.weight != nullptr && q.weight->spec().kind == quant::QuantizerKind::inq) return true;
  return false;
}

quant::InqFreezeReport inq_freeze(Module& model, const Shape& image_shape, double fraction) {
  quant::InqFreezeReport total;
  for (const LayerQuantizers& q : attached_quantizers(model, image_shape)) {
    if (q.weight == nullptr || q.weight->spec().kind != quant::QuantizerKind::inq) continue;
    try {
      const quant::InqFreezeReport r = quant::inq_freeze(q.weight->quantizer(), weight_tensor(*q.layer), fraction);
      total.newly_frozen += r.newly_frozen;
      total.frozen += r.frozen;
      total.total += r.total;
    } catch (const Error& e) {
      throw ArgumentError(fmt::format("layer '{}': {}", q.name, e.what()));
    }
  }
  return total;
}

}  // namespace bitmix::nn
