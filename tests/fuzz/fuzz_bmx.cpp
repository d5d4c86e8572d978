// .bmx models: the container, the model validator and the runtime together. An accepted model
// runs one inference on a fixed input, so any op the validator lets through must execute
// within its buffers. Models whose activations would not fit the fuzzer's memory are skipped
// after validation (a large model is not a bug; the limits are the harness's, not bitmix's).
#include <cstdint>

#include "bitmix/core/tensor.hpp"
#include "bitmix/runtime/model.hpp"
#include "bitmix/runtime/session.hpp"
#include "fuzz/fuzz_common.hpp"

namespace {
constexpr int64_t kMaxElementsPerValue = int64_t{1} << 20;
}

BITMIX_FUZZ_TARGET({
  const bitmix::runtime::Model model = bitmix::runtime::Model::parse(input, "fuzz.bmx");
  for (const bitmix::runtime::ValueInfo& v : model.values()) {
    int64_t n = 1;
    for (const int64_t d : v.shape) {
      if (d > kMaxElementsPerValue) return 0;
      n *= d;
      if (n > kMaxElementsPerValue) return 0;
    }
  }
  if (model.stats().macs > (int64_t{1} << 24)) return 0;
  bitmix::Shape shape{1};
  for (const int64_t d : model.info().input_shape) shape.push_back(d);
  bitmix::Tensor images(shape);
  for (int64_t i = 0; i < images.numel(); ++i) images.data()[i] = static_cast<float>(i % 7) / 6.0f;
  bitmix::runtime::Session session(model);
  const bitmix::Tensor logits = session.run(images);
  if (logits.numel() != model.num_classes()) __builtin_trap();
})
