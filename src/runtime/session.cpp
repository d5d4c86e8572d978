// Session: buffer planning and the execution of a Model's ops (the convolutions that run as a
// float GEMM: session_float_gemm.cpp).
#include "bitmix/runtime/session.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <limits>
#include <span>

#include "bitmix/core/error.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/kernels/conv.hpp"
#include "bitmix/kernels/lut.hpp"
#include "core/float_ops.hpp"
#include "runtime/session_float_gemm.hpp"

namespace bitmix::runtime {
namespace {

Shape batched(int64_t batch, const Shape& per_image) {
  Shape s{batch};
  s.insert(s.end(), per_image.begin(), per_image.end());
  return s;
}

// Floats in the order of their values as integers (bisection over the float line).
int64_t float_order(float x) {
  const auto bits = std::bit_cast<int32_t>(x);
  return bits >= 0 ? int64_t{bits} : -int64_t{bits & 0x7fffffff};
}
float float_from_order(int64_t k) {
  const auto bits = k >= 0 ? static_cast<int32_t>(k) : static_cast<int32_t>((-k) | int64_t{0x80000000});
  return std::bit_cast<float>(bits);
}

// The smallest finite float whose code is >= `code` (quantize_code is non-decreasing in x).
float lowest_input_reaching(const kernels::ActivationQuant& q, int32_t code) {
  int64_t lo = float_order(-std::numeric_limits<float>::max());
  int64_t hi = float_order(std::numeric_limits<float>::max());
  if (kernels::quantize_code(float_from_order(lo), q) >= code) return float_from_order(lo);
  while (hi - lo > 1) {  // invariant: code(lo) < code <= code(hi)
    const int64_t mid = lo + (hi - lo) / 2;
    if (kernels::quantize_code(float_from_order(mid), q) >= code) hi = mid;
    else lo = mid;
  }
  return float_from_order(hi);
}
// The largest finite float whose code is <= `code`.
float highest_input_within(const kernels::ActivationQuant& q, int32_t code) {
  int64_t lo = float_order(-std::numeric_limits<float>::max());
  int64_t hi = float_order(std::numeric_limits<float>::max());
  if (kernels::quantize_code(float_from_order(hi), q) <= code) return float_from_order(hi);
  while (hi - lo > 1) {  // invariant: code(lo) <= code < code(hi)
    const int64_t mid = lo + (hi - lo) / 2;
    if (kernels::quantize_code(float_from_order(mid), q) <= code) lo = mid;
    else hi = mid;
  }
  return float_from_order(lo);
}

}  // namespace

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

bool Session::runs_as_float_gemm(std::size_t index) const { return index < dense_.size() && dense_[index] != nullptr; }
bool Session::skips(std::size_t index) const { return index < skip_.size() && skip_[index]; }
kernels::KernelFamily Session::kernel_family(std::size_t index) const {
  return index < families_.size() && !runs_as_float_gemm(index) ? families_[index] : kernels::KernelFamily::automatic;
}

kernels::KernelFamily resolve_kernel_family(const kernels::WeightSpec& weights, int activation_bits,
                                            const SessionOptions& options) {
  kernels::KernelFamily family = options.kernel_family;
  if (family == kernels::KernelFamily::automatic) {
    const char* env = std::getenv("BITMIX_KERNEL_FAMILY");
    if (env != nullptr && *env != '\0') family = kernels::parse_kernel_family(env, "BITMIX_KERNEL_FAMILY");
  }
  // A forced lut on a layer it cannot run (wider than 4 bits, or its int16 bound) falls back to
  // the automatic choice, so that BITMIX_KERNEL_FAMILY=lut is valid for every model.
  if (family == kernels::KernelFamily::lut && (weights.depthwise || !kernels::lut_supported(weights, activation_bits)))
    family = kernels::KernelFamily::automatic;
  if (family == kernels::KernelFamily::automatic) family = kernels::choose_kernel_family(weights, activation_bits);
  return family;
}

Session::Session(Model model, SessionOptions options) : model_(std::move(model)), options_(options) {
  if (model_.empty()) throw ArgumentError("runtime::Session: the model is empty (not loaded or built)");
  timings_.assign(model_.ops().size(), OpTiming{});
  // Clamp bounds of restricted code ranges, found once by bisection over the kernels' own
  // definition of the code, so that clamping the float before quantizing gives exactly
  // clamp(code, min_code, max_code).
  clamp_.assign(model_.ops().size(), ClampRange{});
  for (std::size_t i = 0; i < model_.ops().size(); ++i) {
    const Op& op = model_.ops()[i];
    if (op.kind != OpKind::quantize) continue;
    const QuantizeParams& q = op.quantize();
    if (q.min_code == 0 && q.max_code == q.quant.max_code()) continue;
    clamp_[i].active = true;
    clamp_[i].lo = lowest_input_reaching(q.quant, q.min_code);
    clamp_[i].hi = highest_input_within(q.quant, q.max_code);
  }
  // The kernel family of every convolution and linear layer, once, from the shapes and bits.
  families_.assign(model_.ops().size(), kernels::KernelFamily::automatic);
  for (std::size_t i = 0; i < model_.ops().size(); ++i) {
    const Op& op = model_.ops()[i];
    if (op.kind != OpKind::conv2d && op.kind != OpKind::linear) continue;
    const int act_bits = model_.values()[static_cast<std::size_t>(op.inputs[0])].quant.bits;
    families_[i] = resolve_kernel_family(op.conv().weights.spec(), act_bits, options_);
  }
  plan_float_gemm();
  // The table-lookup weights, once, for the layers that will run them.
  lut_.resize(model_.ops().size());
  for (std::size_t i = 0; i < model_.ops().size(); ++i)
    if (families_[i] == kernels::KernelFamily::lut && !runs_as_float_gemm(i))
      lut_[i] = std::make_unique<const kernels::LutWeights>(model_.ops()[i].conv().weights);
  plan_buffers();  // after plan_float_gemm: a GEMM convolution reads its quantize op's input
}

void Session::plan_buffers() {
  const std::vector<ValueInfo>& values = model_.values();
  const std::vector<Op>& ops = model_.ops();
  const std::size_t count = values.size();
  // What each op reads when it runs: a convolution run as a float GEMM reads the real input of
  // its quantize op (not the packed codes), a skipped op nothing.
  std::vector<std::vector<int32_t>> reads(ops.size());
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (skip_[i]) continue;
    reads[i] = dense_[i] != nullptr ? std::vector<int32_t>{ops[dense_[i]->quantize_op].inputs[0]} : ops[i].inputs;
  }
  std::vector<std::size_t> last_use(count, 0);
  for (std::size_t i = 0; i < ops.size(); ++i)
    for (int32_t v : reads[i]) last_use[static_cast<std::size_t>(v)] = i;
  last_use[static_cast<std::size_t>(model_.output())] = ops.size();

  buffer_of_.assign(count, -1);
  std::vector<ValueInfo> real_layout, packed_layout;  // what each buffer holds
  std::vector<int32_t> free_real, free_packed;
  auto release = [&](int32_t value) {
    const int32_t b = buffer_of_[static_cast<std::size_t>(value)];
    if (value == 0 || b < 0 || options_.keep_values) return;
    (values[static_cast<std::size_t>(value)].kind == ValueKind::real ? free_real : free_packed).push_back(b);
  };
  auto same_packed = [](const ValueInfo& a, const ValueInfo& b) {
    return a.shape == b.shape && a.quant == b.quant && a.border == b.border;
  };
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    const ValueInfo& out = values[static_cast<std::size_t>(op.output)];
    // The residual addition runs in place on its branch when the branch dies here.
    if (skip_[i]) continue;  // never runs: no buffer
    const bool in_place = op.kind == OpKind::add && op.inputs[0] != 0 &&
                          last_use[static_cast<std::size_t>(op.inputs[0])] == i && op.inputs[0] != op.inputs[1] &&
                          !options_.keep_values;
    int32_t buffer = -1;
    if (in_place) {
      buffer = buffer_of_[static_cast<std::size_t>(op.inputs[0])];
    } else if (out.kind == ValueKind::real) {
      for (std::size_t k = 0; k < free_real.size(); ++k)
        if (real_layout[static_cast<std::size_t>(free_real[k])].shape == out.shape) {
          buffer = free_real[k];
          free_real.erase(free_real.begin() + static_cast<std::ptrdiff_t>(k));
          break;
        }
      if (buffer < 0) {
        buffer = static_cast<int32_t>(real_layout.size());
        real_layout.push_back(out);
      }
    } else {
      for (std::size_t k = 0; k < free_packed.size(); ++k)
        if (same_packed(packed_layout[static_cast<std::size_t>(free_packed[k])], out)) {
          buffer = free_packed[k];
          free_packed.erase(free_packed.begin() + static_cast<std::ptrdiff_t>(k));
          break;
        }
      if (buffer < 0) {
        buffer = static_cast<int32_t>(packed_layout.size());
        packed_layout.push_back(out);
      }
    }
    buffer_of_[static_cast<std::size_t>(op.output)] = buffer;
    const std::vector<int32_t>& in = reads[i];
    for (std::size_t k = 0; k < in.size(); ++k) {
      const int32_t v = in[k];
      if (last_use[static_cast<std::size_t>(v)] != i) continue;
      if (in_place && k == 0) continue;  // its buffer lives on as the output
      if (std::find(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(k), v) != in.begin() + static_cast<std::ptrdiff_t>(k))
        continue;  // the same value given twice: release once
      release(v);
    }
  }
  reals_.assign(real_layout.size(), Tensor{});
  packed_.assign(packed_layout.size(), kernels::PackedActivations{});
}

void Session::reset_timings() {
  for (OpTiming& t : timings_) t = OpTiming{};
}

Tensor Session::run(const Tensor& images) {
  Tensor logits;
  execute(images, false, logits);
  return logits;
}
void Session::run(const Tensor& images, Tensor& logits) { execute(images, false, logits); }
Tensor Session::run_normalized(const Tensor& inputs) {
  Tensor logits;
  execute(inputs, true, logits);
  return logits;
}
void Session::run_normalized(const Tensor& inputs, Tensor& logits) { execute(inputs, true, logits); }

void Session::execute(const Tensor& input, bool normalized, Tensor& logits) {
  const ModelInfo& info = model_.info();
  const Shape& expected = info.input_shape;
  const Tensor* x = &input;
  if (input.rank() == 3 && input.shape() == expected) {
    single_image_ = input.reshaped(batched(1, expected));
    x = &single_image_;
  } else if (input.rank() != 4 || input.dim(0) < 1 || Shape(input.shape().begin() + 1, input.shape().end()) != expected) {
    throw ShapeError(fmt::format("model '{}': input {} must be [N, {}, {}, {}] (or one image [{}, {}, {}])", info.name,
                                 shape_to_string(input.shape()), expected[0], expected[1], expected[2], expected[0],
                                 expected[1], expected[2]));
  }
  const int64_t batch = x->dim(0);
  const std::vector<Op>& ops = model_.ops();
  const std::vector<ValueInfo>& values = model_.values();
  auto real = [&](int32_t v) -> Tensor& { return reals_[static_cast<std::size_t>(buffer_of_[static_cast<std::size_t>(v)])]; };
  auto packed = [&](int32_t v) -> kernels::PackedActivations& {
    return packed_[static_cast<std::size_t>(buffer_of_[static_cast<std::size_t>(v)])];
  };
  auto real_input = [&](int32_t v) -> const Tensor& { return v == 0 ? *x : real(v); };
  auto real_output = [&](int32_t v) -> Tensor& {  // shaped [N, ...] as the model says
    Tensor& t = real(v);
    const Shape shape = batched(batch, values[static_cast<std::size_t>(v)].shape);
    if (t.shape() != shape) t = Tensor(shape);
    return t;
  };

  has_run_ = false;
  Stopwatch total;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    Stopwatch watch;
    if (skip_[i]) {
      OpTiming& t = timings_[i];
      t.last_seconds = 0.0;
      ++t.calls;
      continue;
    }
    if (dense_[i] != nullptr) {
      const Op& q = ops[dense_[i]->quantize_op];
      const bool packed_output = values[static_cast<std::size_t>(op.output)].kind == ValueKind::packed;
      run_dense_conv(i, real_input(q.inputs[0]), normalized, packed_output ? nullptr : &real(op.output),
                     packed_output ? &packed(op.output) : nullptr);
      const double seconds = watch.seconds();
      OpTiming& t = timings_[i];
      t.last_seconds = seconds;
      t.total_seconds += seconds;
      ++t.calls;
      continue;
    }
    switch (op.kind) {
      case OpKind::quantize: {
        const QuantizeParams& q = op.quantize();
        const Tensor& src = real_input(op.inputs[0]);
        const bool normalize = q.normalize && !normalized;
        const ClampRange& clamp = clamp_[i];
        const Tensor* from = &src;
        if (normalize || clamp.active || src.rank() != 4) {
          const Shape shape = batched(batch, values[static_cast<std::size_t>(op.output)].shape);
          if (scratch_.shape() != shape) scratch_ = Tensor(shape);
          float_ops::prepare_input(src, normalize ? std::span<const float>(info.mean) : std::span<const float>(),
                                   normalize ? std::span<const float>(info.stddev) : std::span<const float>(),
                                   clamp.active, clamp.lo, clamp.hi, scratch_);
          from = &scratch_;
        }
        kernels::quantize_pack(*from, q.quant, q.border, packed(op.output));
        break;
      }
      case OpKind::conv2d: {
        const ConvParams& c = op.conv();
        kernels::Conv2dParams conv = c.conv;
        conv.family = families_[i];
        const bool packed_out = values[static_cast<std::size_t>(op.output)].kind == ValueKind::packed;
        if (lut_[i] != nullptr && packed_out)
          kernels::conv2d(packed(op.inputs[0]), *lut_[i], conv, c.epilogue, packed(op.output));
        else if (lut_[i] != nullptr)
          kernels::conv2d(packed(op.inputs[0]), *lut_[i], conv, c.epilogue, real(op.output));
        else if (packed_out)
          kernels::conv2d(packed(op.inputs[0]), c.weights, conv, c.epilogue, packed(op.output));
        else
          kernels::conv2d(packed(op.inputs[0]), c.weights, conv, c.epilogue, real(op.output));
        break;
      }
      case OpKind::linear: {
        const ConvParams& c = op.conv();
        const bool packed_out = values[static_cast<std::size_t>(op.output)].kind == ValueKind::packed;
        if (lut_[i] != nullptr && packed_out)
          kernels::gemm(packed(op.inputs[0]), *lut_[i], c.epilogue, packed(op.output));
        else if (lut_[i] != nullptr)
          kernels::gemm(packed(op.inputs[0]), *lut_[i], c.epilogue, real(op.output));
        else if (packed_out)
          kernels::gemm(packed(op.inputs[0]), c.weights, c.epilogue, packed(op.output), families_[i]);
        else
          kernels::gemm(packed(op.inputs[0]), c.weights, c.epilogue, real(op.output), families_[i]);
        break;
      }
      case OpKind::add: {
        const AddParams& a = op.add();
        const Tensor& branch = real_input(op.inputs[0]);
        const Tensor& shortcut = real_input(op.inputs[1]);
        Tensor& out = real(op.output);
        if (&out != &branch && out.shape() != branch.shape()) out = Tensor(branch.shape());
        const float_ops::Shortcut how{a.shortcut == ShortcutKind::subsample_pad, a.stride, a.channel_offset};
        float_ops::residual_add(branch, shortcut, how, a.relu, out);
        break;
      }
      case OpKind::global_avg_pool:
        float_ops::global_avg_pool(real_input(op.inputs[0]), real_output(op.output));
        break;
      case OpKind::max_pool: {
        const PoolParams& p = op.pool();
        const float_ops::PoolWindow window{p.kernel, p.kernel, p.stride, p.stride, p.padding, p.padding};
        float_ops::max_pool2d(real_input(op.inputs[0]), window, real_output(op.output));
        break;
      }
      case OpKind::flatten: {
        const Tensor& src = real_input(op.inputs[0]);
        std::copy(src.data(), src.data() + src.numel(), real_output(op.output).data());
        break;
      }
    }
    const double seconds = watch.seconds();
    OpTiming& t = timings_[i];
    t.last_seconds = seconds;
    t.total_seconds += seconds;
    ++t.calls;
  }
  const Tensor& out = real(model_.output());
  const Shape shape{batch, model_.num_classes()};
  if (logits.shape() != shape) logits = Tensor(shape);
  std::copy(out.data(), out.data() + out.numel(), logits.data());
  last_run_seconds_ = total.seconds();
  has_run_ = true;
}

const Tensor& Session::real_value(int32_t id) const {
  if (!options_.keep_values) throw ArgumentError("Session::real_value: the session was not created with keep_values");
  if (!has_run_) throw ArgumentError("Session::real_value: no run yet");
  if (id < 1 || static_cast<std::size_t>(id) >= buffer_of_.size() ||
      model_.values()[static_cast<std::size_t>(id)].kind != ValueKind::real)
    throw ArgumentError(fmt::format("Session::real_value: value {} is not an intermediate real value", id));
  return reals_[static_cast<std::size_t>(buffer_of_[static_cast<std::size_t>(id)])];
}

const kernels::PackedActivations& Session::packed_value(int32_t id) const {
  if (!options_.keep_values) throw ArgumentError("Session::packed_value: the session was not created with keep_values");
  if (!has_run_) throw ArgumentError("Session::packed_value: no run yet");
  if (id < 1 || static_cast<std::size_t>(id) >= buffer_of_.size() ||
      model_.values()[static_cast<std::size_t>(id)].kind != ValueKind::packed)
    throw ArgumentError(fmt::format("Session::packed_value: value {} is not a packed value", id));
  return packed_[static_cast<std::size_t>(buffer_of_[static_cast<std::size_t>(id)])];
}

std::vector<int> predictions(const Tensor& logits) {
  if (logits.rank() != 2 || logits.dim(1) < 1)
    throw ShapeError(fmt::format("predictions: logits {} must be [N, classes]", shape_to_string(logits.shape())));
  const int64_t n = logits.dim(0), m = logits.dim(1);
  std::vector<int> out(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits.data() + i * m;
    out[static_cast<std::size_t>(i)] = static_cast<int>(std::max_element(row, row + m) - row);
  }
  return out;
}

}  // namespace bitmix::runtime
