#pragma once
// Running an integer model:
//
//   auto model = bitmix::runtime::Model::load("model.bmx");
//   bitmix::runtime::Session session(model);
//   Tensor logits = session.run(images);          // [N, C, H, W] pixels in [0, 1] -> [N, classes]
//   for (const auto& t : session.timings()) ...   // per op: last and accumulated seconds
//
// Inputs: run() takes pixel values in [0, 1] (an 8-bit image divided by 255) and applies the
// normalization stored in the model; run_normalized() takes inputs already normalized as the
// training data loader produced them, (pixel - mean) / std. Both give the same logits for the
// same image. A single image may be given as [C, H, W].
//
// A Session owns the intermediate buffers and reuses them from run to run (values whose lives
// do not overlap share storage), so steady-state runs allocate only the returned logits. The
// work of every op runs on bitmix's thread pool (bitmix::set_num_threads, BITMIX_NUM_THREADS).
// A Session is not thread-safe; several Sessions may share one Model.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/kernels/activations.hpp"
#include "bitmix/kernels/family.hpp"
#include "bitmix/runtime/model.hpp"

namespace bitmix::kernels {
class LutWeights;
}

namespace bitmix::runtime {

// Which convolutions may run as a float GEMM on integer-valued operands instead of the
// bit-serial kernels. The results are identical (the GEMM sums products of integer codes
// exactly: the path is only taken where the accumulator provably stays below 2^24), only the
// speed differs. The bit-serial packing wastes most of each 8-channel pixel group when a layer
// has few input channels, as the first convolution of an image model has (1 or 3), which also
// runs at 8 bits by default: there the GEMM is several times faster.
enum class FloatGemmPolicy : uint8_t {
  never,          // every convolution on the bit-serial kernels
  narrow_inputs,  // convolutions reading at most 4 channels straight from a quantize op (default)
  when_exact,     // every convolution fed by a quantize op where the bound holds (experiments)
};

struct SessionOptions {
  // Keep every intermediate value of the last run readable through real_value() and
  // packed_value() (no buffer sharing; for tests and debugging).
  bool keep_values = false;
  FloatGemmPolicy float_gemm = FloatGemmPolicy::narrow_inputs;
  // The kernel family of every convolution and linear layer (bitmix/kernels/family.hpp). With
  // `automatic`, the environment variable BITMIX_KERNEL_FAMILY=popcount|int8|lut|auto decides,
  // and with it unset or "auto" each layer gets the family the cost model of the active ISA path
  // picks for its shape and bits (kernels::choose_kernel_family). A forced family a layer
  // cannot run (lut beyond 4-bit weights or activations) gives that layer the automatic choice.
  // Chosen once, when the Session is built (which then builds the table-lookup weights of the
  // layers resolved to lut); the logits are identical with every family.
  kernels::KernelFamily kernel_family = kernels::KernelFamily::automatic;
};

// The family a layer with these weights and activation bits runs under `options`, as the
// Session constructor resolves it (see SessionOptions::kernel_family). ArgumentError naming
// BITMIX_KERNEL_FAMILY if that holds an unknown name.
kernels::KernelFamily resolve_kernel_family(const kernels::WeightSpec& weights, int activation_bits,
                                            const SessionOptions& options);

struct OpTiming {
  double last_seconds = 0.0;   // the last run
  double total_seconds = 0.0;  // since construction or reset_timings()
  int64_t calls = 0;
};

class Session {
 public:
  // Throws ArgumentError if the model is empty.
  explicit Session(Model model, SessionOptions options = {});
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  // Pixels in [0, 1], [N, C, H, W] or [C, H, W] with the model's input shape; returns the
  // logits [N, classes]. ShapeError naming the expected shape otherwise.
  Tensor run(const Tensor& images);
  void run(const Tensor& images, Tensor& logits);
  // Inputs already normalized with the model's mean and std.
  Tensor run_normalized(const Tensor& inputs);
  void run_normalized(const Tensor& inputs, Tensor& logits);

  const Model& model() const { return model_; }
  // Whether op `index` runs as a float GEMM (FloatGemmPolicy), and whether a quantize op is
  // skipped because its only consumers run that way (its timing is then 0).
  bool runs_as_float_gemm(std::size_t index) const;
  bool skips(std::size_t index) const;
  // The kernel family op `index` runs (resolved at construction; `automatic` for ops that are
  // not a convolution or linear layer, or that run as a float GEMM).
  kernels::KernelFamily kernel_family(std::size_t index) const;
  // One per model op, in op order.
  std::span<const OpTiming> timings() const { return timings_; }
  double last_run_seconds() const { return last_run_seconds_; }
  void reset_timings();

  // With keep_values: the value `id` of the last run (real: [N, ...shape], packed). Throws
  // ArgumentError without keep_values, for a wrong kind or before the first run.
  const Tensor& real_value(int32_t id) const;
  const kernels::PackedActivations& packed_value(int32_t id) const;

 private:
  struct DenseConv;
  void execute(const Tensor& input, bool normalized, Tensor& logits);
  void plan_buffers();
  void plan_float_gemm();
  void run_dense_conv(std::size_t index, const Tensor& src, bool normalized, Tensor* real_out,
                      kernels::PackedActivations* packed_out);

  Model model_;
  SessionOptions options_;
  // Buffer of each value: index into reals_ or packed_ (value 0 is the caller's input).
  std::vector<int32_t> buffer_of_;
  std::vector<Tensor> reals_;
  std::vector<kernels::PackedActivations> packed_;
  Tensor scratch_;       // normalized or clamped input of a quantize op
  Tensor single_image_;  // a [C, H, W] input seen as [1, C, H, W]
  // Per op: float bounds that restrict a quantize op's codes to [min_code, max_code].
  struct ClampRange {
    bool active = false;
    float lo = 0.0f, hi = 0.0f;
  };
  std::vector<ClampRange> clamp_;
  std::vector<std::unique_ptr<DenseConv>> dense_;  // per op, null unless it runs as a float GEMM
  std::vector<bool> skip_;                         // per op: a quantize op nobody needs
  std::vector<kernels::KernelFamily> families_;    // per op: the family of a conv / linear op
  // per op: the tables of a conv / linear op resolved to kernels::KernelFamily::lut, else null
  std::vector<std::unique_ptr<const kernels::LutWeights>> lut_;
  std::vector<OpTiming> timings_;
  double last_run_seconds_ = 0.0;
  bool has_run_ = false;
};

// Index of the largest logit of each row (the first one on ties); logits [N, M].
std::vector<int> predictions(const Tensor& logits);

}  // namespace bitmix::runtime
