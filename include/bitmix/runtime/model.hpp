#pragma once
// The integer model: a validated list of operations over values, built once (by the deploy
// compiler or from a .bmx file) and immutable afterwards. docs/runtime.md describes the
// operations and their arithmetic; docs/bmx-format.md ("Model content") how they are stored.
//
//   value 0            the network input, float [N, C, H, W]
//   op i -> value i+1  every operation produces exactly one value
//
// A value is either a float tensor ("real", NCHW) or packed K-bit activations ("packed", the
// bit planes the kernels read). Operations:
//
//   quantize          real -> packed: codes of (x - mean) / std (model input) or x, with the
//                     consuming layer's activation quantizer
//   conv2d, linear    packed -> real or packed: bit-serial convolution / GEMM with the fused
//                     epilogue y = float(acc) * scale[oc] + bias[oc] (BatchNorm folded in),
//                     optional ReLU, float output or requantization into the next layer's codes
//   add               real + real -> real: a residual addition, optional ReLU, with the
//                     shortcut read as is (identity) or subsampled and zero-padded in channels
//                     (ResNet option A)
//   global_avg_pool   real [C, H, W] -> real [C, 1, 1]
//   max_pool          real -> real
//   flatten           real [C, H, W] -> real [C*H*W, 1, 1]
//
// Shapes are per image ([C, H, W], or [M] for the logits of a linear layer); every op checks its
// inputs when it is added, so a Model that exists is consistent: a Session never meets a shape,
// bit width, padding or accumulator range the kernels would refuse.
//
// Model is a cheap handle to shared immutable state: copying it shares the weights, and a
// Session keeps the model alive.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/kernels/activations.hpp"
#include "bitmix/kernels/conv.hpp"
#include "bitmix/kernels/epilogue.hpp"
#include "bitmix/kernels/weights.hpp"
#include "bitmix/runtime/bmx_file.hpp"

namespace bitmix::runtime {

// The version of the model content (keys and tensors) inside the .bmx container.
inline constexpr int64_t kModelFormatVersion = 1;

enum class ValueKind : uint8_t { real, packed };
std::string_view value_kind_name(ValueKind kind);

struct ValueInfo {
  ValueKind kind = ValueKind::real;
  Shape shape;                         // per image: [C, H, W], or [M] for linear outputs
  kernels::ActivationQuant quant{};    // packed values only
  int border = 0;                      // packed values only
};

enum class OpKind : uint8_t { quantize, conv2d, linear, add, global_avg_pool, max_pool, flatten };
std::string_view op_kind_name(OpKind kind);
// Throws ArgumentError naming the text and the accepted names.
OpKind parse_op_kind(std::string_view name);

// real -> packed.
struct QuantizeParams {
  // The kernels' quantizer: code = clamp(nearbyint(x * (1/scale)) + zero_point, ...) with
  // reciprocal = true (the form bitmix::quant computes), or x / scale.
  kernels::ActivationQuant quant{};
  int border = 0;  // border pixels (zero-point codes) for the consumers' padding
  // Apply the model's input normalization (x - mean[c]) / std[c] first. Only for the model
  // input; Session::run_normalized skips it.
  bool normalize = false;
  // Codes are limited to [min_code, max_code] (a restricted grid such as a symmetric signed
  // quantizer's [-127, 127] + 128); default: the full [0, 2^bits - 1].
  int32_t min_code = 0;
  int32_t max_code = -1;  // -1: 2^bits - 1
};

// packed -> real or packed. For linear layers the weights are a dense 1x1 spec whose
// in_channels is the input's C*H*W and the input must be [K, 1, 1].
struct ConvParams {
  kernels::PackedWeights weights;
  kernels::Conv2dParams conv{};    // stride and padding (linear: none)
  kernels::Epilogue epilogue;      // scale, bias, ReLU, float or requantized output
};

enum class ShortcutKind : uint8_t { identity, subsample_pad };
std::string_view shortcut_kind_name(ShortcutKind kind);

// out = relu?(branch + shortcut(x)), inputs {branch, x}.
struct AddParams {
  ShortcutKind shortcut = ShortcutKind::identity;
  // subsample_pad: shortcut[c][y][x] = x[c - channel_offset][y * stride][x * stride], zero
  // for channels outside the source (ResNet option A: channel_offset = (C_out - C_in) / 2).
  int stride = 1;
  int64_t channel_offset = 0;
  bool relu = true;
};

// Max pooling (padding counts as -infinity, PyTorch semantics, floor mode).
struct PoolParams {
  int kernel = 2;
  int stride = 2;
  int padding = 0;
};

// What a conv2d/linear/quantize op was before compilation: the quantizer kinds and scales, for
// reports and tools. Not used to compute; stored in the file as given.
struct LayerNotes {
  std::string weight_quantizer;      // "lsq", "sawb", ... ("" if unknown)
  std::string input_quantizer;
  int weight_bits = 0;               // nominal bits of the quantizers (0 if unknown)
  int input_bits = 0;
  std::vector<float> weight_scales;  // one per group
  float input_scale = 0.0f;
};

struct Op {
  OpKind kind = OpKind::quantize;
  std::string name;                 // the layer it comes from ("layer1.0.conv1"), unique
  std::vector<int32_t> inputs;      // value ids, all < output
  int32_t output = 0;               // value id (= index of the op + 1)
  std::variant<std::monostate, QuantizeParams, ConvParams, AddParams, PoolParams> params;
  LayerNotes notes;

  const QuantizeParams& quantize() const { return std::get<QuantizeParams>(params); }
  const ConvParams& conv() const { return std::get<ConvParams>(params); }
  const AddParams& add() const { return std::get<AddParams>(params); }
  const PoolParams& pool() const { return std::get<PoolParams>(params); }
};

struct ModelInfo {
  std::string name;                       // e.g. "resnet20-w2a2"
  std::string architecture;               // e.g. "resnet20"
  Shape input_shape;                      // [C, H, W]
  // Per-channel normalization of pixels in [0, 1]; both empty (no normalization) or one per
  // input channel, stddev > 0.
  std::vector<float> mean, stddev;
  std::vector<std::string> class_names;   // empty or one per output
  // Free-form provenance ("source", "bit_config", ...), stored under "info.<key>".
  std::map<std::string, MetaValue> extra;
};

// Sizes and costs, per image.
struct ModelStats {
  int64_t weight_count = 0;        // weight codes of every conv2d/linear
  int64_t packed_weight_bytes = 0; // their packed words, as stored
  int64_t epilogue_bytes = 0;      // folded per-channel scale and bias
  int64_t float_parameter_bytes = 0;  // fp32 weights plus one bias per output channel
  int64_t macs = 0;                // multiply-accumulates of conv2d/linear
  int64_t bitops = 0;              // sum of macs * weight bits * activation bits
};

class Model;

// Builds a Model op by op. Every call validates its arguments against the values it reads and
// throws ArgumentError or ShapeError naming the op (its name) and what was expected.
class ModelBuilder {
 public:
  // Validates the info (input shape of 3 positive extents, normalization sizes).
  explicit ModelBuilder(ModelInfo info);

  int32_t input() const { return 0; }
  const ValueInfo& value(int32_t id) const;
  int32_t value_count() const { return static_cast<int32_t>(values_.size()); }

  int32_t quantize(std::string name, int32_t x, QuantizeParams params, LayerNotes notes = {});
  int32_t conv2d(std::string name, int32_t x, ConvParams params, LayerNotes notes = {});
  int32_t linear(std::string name, int32_t x, ConvParams params, LayerNotes notes = {});
  int32_t add(std::string name, int32_t branch, int32_t shortcut, AddParams params);
  int32_t global_avg_pool(std::string name, int32_t x);
  int32_t max_pool(std::string name, int32_t x, PoolParams params);
  int32_t flatten(std::string name, int32_t x);

  // The model's output must be a real value of shape [M] (logits); if class names are given
  // there must be M of them. The builder is left empty.
  Model finish(int32_t output);

 private:
  int32_t push(Op op, ValueInfo value);
  const ValueInfo& input_of(const std::string& op, int32_t id, ValueKind kind, const char* role) const;
  int32_t add_matmul(OpKind kind, std::string name, int32_t x, ConvParams params, LayerNotes notes);

  ModelInfo info_;
  std::vector<ValueInfo> values_;
  std::vector<Op> ops_;
};

class Model {
 public:
  Model() = default;  // empty: no ops (every accessor but empty() needs a built model)

  // Reads a .bmx file and rebuilds the model, validating everything (FormatError naming the
  // file, the op and the field; IoError if unreadable).
  static Model load(const std::filesystem::path& path);
  static Model parse(std::span<const uint8_t> bytes, std::string source);
  static Model from_file(const BmxFile& file);

  // Atomic write (temporary file + rename).
  void save(const std::filesystem::path& path) const;
  std::vector<uint8_t> serialize() const;

  bool empty() const noexcept { return impl_ == nullptr; }
  const ModelInfo& info() const;
  const std::vector<Op>& ops() const;
  const std::vector<ValueInfo>& values() const;
  int32_t output() const;
  int64_t num_classes() const;
  ModelStats stats() const;

  struct Impl;  // implementation detail (src/runtime/model_impl.hpp)

 private:
  friend class ModelBuilder;
  std::shared_ptr<const Impl> impl_;
};

// "conv2d 3x3/2 16->32, W2A2 -> packed 2-bit" and the like, for tables.
std::string describe(const Model& model, const Op& op);
// "[16, 32, 32]"
std::string shape_text(const Shape& per_image);

}  // namespace bitmix::runtime
