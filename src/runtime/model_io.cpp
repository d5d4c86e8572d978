// Model <-> .bmx: the keys and tensors of docs/bmx-format.md, "Model content". Loading goes
// through ModelBuilder, so a file is held to exactly the checks a freshly built model is.
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/runtime/model.hpp"
#include "runtime/model_impl.hpp"

namespace bitmix::runtime {
namespace {

std::string op_key(std::size_t i, std::string_view field) { return fmt::format("op.{}.{}", i, field); }

std::vector<int64_t> as_ints(const Shape& s) { return {s.begin(), s.end()}; }

std::vector<double> as_reals(std::span<const float> v) {
  std::vector<double> out;
  out.reserve(v.size());
  for (float x : v) out.push_back(static_cast<double>(x));
  return out;
}

void write_quant(BmxWriter& w, std::size_t i, const std::string& prefix, const kernels::ActivationQuant& q) {
  w.set(op_key(i, prefix + "bits"), int64_t{q.bits});
  w.set(op_key(i, prefix + "scale"), static_cast<double>(q.scale));
  w.set(op_key(i, prefix + "zero_point"), int64_t{q.zero_point});
  w.set(op_key(i, prefix + "reciprocal"), int64_t{q.reciprocal ? 1 : 0});
}

void write_notes(BmxWriter& w, std::size_t i, const LayerNotes& n) {
  if (!n.weight_quantizer.empty()) w.set(op_key(i, "notes.weight_quantizer"), n.weight_quantizer);
  if (!n.input_quantizer.empty()) w.set(op_key(i, "notes.input_quantizer"), n.input_quantizer);
  if (n.weight_bits != 0) w.set(op_key(i, "notes.weight_bits"), int64_t{n.weight_bits});
  if (n.input_bits != 0) w.set(op_key(i, "notes.input_bits"), int64_t{n.input_bits});
  if (!n.weight_scales.empty()) w.set(op_key(i, "notes.weight_scales"), as_reals(n.weight_scales));
  if (n.input_scale != 0.0f) w.set(op_key(i, "notes.input_scale"), static_cast<double>(n.input_scale));
}

// ---- Reading.

class Reader {
 public:
  explicit Reader(const BmxFile& file) : file_(file) {}

  [[noreturn]] void fail(const std::string& message) const {
    throw FormatError(fmt::format("{}: {}", file_.source(), message));
  }
  int64_t integer(const std::string& key, int64_t lo, int64_t hi) {
    used_.insert(key);
    const int64_t v = file_.get_int(key);
    if (v < lo || v > hi) fail(fmt::format("key '{}' = {}: expected an integer in [{}, {}]", key, v, lo, hi));
    return v;
  }
  int small(const std::string& key, int lo, int hi) { return static_cast<int>(integer(key, lo, hi)); }
  bool flag(const std::string& key) { return integer(key, 0, 1) != 0; }
  float real32(const std::string& key) {
    used_.insert(key);
    const double v = file_.get_real(key);
    const auto f = static_cast<float>(v);
    if (!std::isfinite(v) || static_cast<double>(f) != v)
      fail(fmt::format("key '{}' = {}: expected a finite float32 value", key, v));
    return f;
  }
  std::vector<float> reals32(const std::string& key, std::size_t max_count) {
    used_.insert(key);
    const std::vector<double>& v = file_.get_reals(key);
    if (v.size() > max_count) fail(fmt::format("key '{}': {} values, expected at most {}", key, v.size(), max_count));
    std::vector<float> out;
    for (double d : v) {
      const auto f = static_cast<float>(d);
      if (!std::isfinite(d) || static_cast<double>(f) != d)
        fail(fmt::format("key '{}': value {} is not a finite float32", key, d));
      out.push_back(f);
    }
    return out;
  }
  const std::string& string(const std::string& key) {
    used_.insert(key);
    return file_.get_string(key);
  }
  const std::vector<std::string>& strings(const std::string& key, std::size_t max_count) {
    used_.insert(key);
    const std::vector<std::string>& v = file_.get_strings(key);
    if (v.size() > max_count) fail(fmt::format("key '{}': {} values, expected at most {}", key, v.size(), max_count));
    return v;
  }
  std::vector<int64_t> ints(const std::string& key, std::size_t count, int64_t lo, int64_t hi) {
    used_.insert(key);
    const std::vector<int64_t>& v = file_.get_ints(key);
    if (v.size() != count) fail(fmt::format("key '{}': {} values, expected {}", key, v.size(), count));
    for (int64_t x : v)
      if (x < lo || x > hi) fail(fmt::format("key '{}': value {} outside [{}, {}]", key, x, lo, hi));
    return v;
  }
  bool has(const std::string& key) const { return file_.has(key); }
  const TensorEntry& tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
    used_tensors_.insert(name);
    return file_.tensor(name, dtype, shape);
  }
  std::vector<float> floats(const std::string& name, int64_t count) {
    used_tensors_.insert(name);
    return file_.floats(name, {count});
  }
  kernels::ActivationQuant quant(std::size_t i, const std::string& prefix) {
    kernels::ActivationQuant q;
    q.bits = small(op_key(i, prefix + "bits"), 1, 8);
    q.scale = real32(op_key(i, prefix + "scale"));
    q.zero_point = static_cast<int32_t>(integer(op_key(i, prefix + "zero_point"), 0, 255));
    q.reciprocal = flag(op_key(i, prefix + "reciprocal"));
    return q;
  }
  LayerNotes notes(std::size_t i) {
    LayerNotes n;
    auto opt_string = [&](const char* field, std::string& out) {
      if (has(op_key(i, field))) out = string(op_key(i, field));
    };
    opt_string("notes.weight_quantizer", n.weight_quantizer);
    opt_string("notes.input_quantizer", n.input_quantizer);
    if (has(op_key(i, "notes.weight_bits"))) n.weight_bits = small(op_key(i, "notes.weight_bits"), 1, 32);
    if (has(op_key(i, "notes.input_bits"))) n.input_bits = small(op_key(i, "notes.input_bits"), 1, 32);
    if (has(op_key(i, "notes.weight_scales"))) n.weight_scales = reals32(op_key(i, "notes.weight_scales"), 1 << 20);
    if (has(op_key(i, "notes.input_scale"))) n.input_scale = real32(op_key(i, "notes.input_scale"));
    return n;
  }

  // Every metadata key and tensor must have been read: anything else is a file this version
  // does not understand (or a corrupted one whose checksums were recomputed).
  void check_all_used() const {
    for (const auto& [key, value] : file_.metadata())
      if (!used_.contains(key) && key.rfind("info.", 0) != 0)
        fail(fmt::format("unknown key '{}' (not part of model format version {})", key, kModelFormatVersion));
    for (const TensorEntry& t : file_.tensors())
      if (!used_tensors_.contains(t.name))
        fail(fmt::format("tensor '{}' is not used by any op (not part of model format version {})", t.name,
                         kModelFormatVersion));
  }

 private:
  const BmxFile& file_;
  std::set<std::string, std::less<>> used_;
  std::set<std::string, std::less<>> used_tensors_;
};

kernels::WeightEncoding parse_encoding(Reader& r, const std::string& key) {
  const std::string& name = r.string(key);
  if (name == "twos_complement") return kernels::WeightEncoding::twos_complement;
  if (name == "odd_levels") return kernels::WeightEncoding::odd_levels;
  r.fail(fmt::format("key '{}' = '{}': expected twos_complement or odd_levels", key, name));
}

ConvParams read_conv(Reader& r, std::size_t i, OpKind kind) {
  kernels::WeightSpec spec;
  const std::vector<int64_t> shape = r.ints(op_key(i, "weights.shape"), 4, 1, int64_t{1} << 20);
  spec.out_channels = shape[0];
  spec.in_channels = shape[1];
  spec.kernel_h = shape[2];
  spec.kernel_w = shape[3];
  spec.bits = r.small(op_key(i, "weights.bits"), 1, 8);
  spec.encoding = parse_encoding(r, op_key(i, "weights.encoding"));
  spec.depthwise = r.flag(op_key(i, "weights.depthwise"));
  const int64_t layout = r.integer(op_key(i, "weights.layout"), 0, 1 << 20);
  if (layout != kernels::PackedWeights::kLayoutVersion)
    r.fail(fmt::format("op {}: packed weight layout version {}, this bitmix reads version {}", i, layout,
                       kernels::PackedWeights::kLayoutVersion));
  try {
    kernels::validate(spec, fmt::format("op {} weights", i));
  } catch (const ArgumentError& e) {
    r.fail(e.what());
  }
  ConvParams p;
  if (kind == OpKind::conv2d) {
    const std::vector<int64_t> stride = r.ints(op_key(i, "stride"), 2, 1, 64);
    const std::vector<int64_t> padding = r.ints(op_key(i, "padding"), 2, 0, 64);
    p.conv = kernels::Conv2dParams{static_cast<int>(stride[0]), static_cast<int>(stride[1]),
                                   static_cast<int>(padding[0]), static_cast<int>(padding[1])};
  }
  // Sizes before allocation: the word count follows from the validated spec, and the tensor
  // must have exactly that many words in the file (so it is bounded by the file size).
  const int64_t words = kernels::PackedWeights::word_count(spec);
  const TensorEntry& t = r.tensor(op_key(i, "weights"), DType::u32, {words});
  std::vector<uint32_t> word_values(static_cast<std::size_t>(words));
  if (words > 0) std::memcpy(word_values.data(), t.bytes.data(), word_values.size() * sizeof(uint32_t));
  try {
    p.weights = kernels::PackedWeights(spec, word_values);
  } catch (const Error& e) {
    r.fail(fmt::format("tensor '{}': {}", op_key(i, "weights"), e.what()));
  }
  std::vector<float> scale = r.floats(op_key(i, "scale"), spec.out_channels);
  std::vector<float> bias = r.floats(op_key(i, "bias"), spec.out_channels);
  const bool relu = r.flag(op_key(i, "relu"));
  const std::string& output = r.string(op_key(i, "output"));
  try {
    if (output == "real") {
      p.epilogue = kernels::Epilogue::float_output(std::move(scale), std::move(bias), relu);
    } else if (output == "packed") {
      const kernels::ActivationQuant q = r.quant(i, "out.");
      const int border = r.small(op_key(i, "out.border"), 0, 16);
      kernels::validate(q, fmt::format("op {} output", i));
      p.epilogue = kernels::Epilogue::requantize(std::move(scale), std::move(bias), relu, q, border);
    } else {
      r.fail(fmt::format("key '{}' = '{}': expected real or packed", op_key(i, "output"), output));
    }
  } catch (const ArgumentError& e) {
    r.fail(fmt::format("op {} epilogue: {}", i, e.what()));
  }
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
std::vector<uint8_t> Model::serialize() const {
  if (!impl_) throw ArgumentError("runtime::Model::serialize: the model is empty");
  const Impl& m = *impl_;
  BmxWriter w;
  w.set("model.format_version", kModelFormatVersion);
  w.set("model.name", m.info.name);
  w.set("model.architecture", m.info.architecture);
  w.set("model.input_shape", as_ints(m.info.input_shape));
  if (!m.info.mean.empty()) {
    w.set("model.normalization.mean", as_reals(m.info.mean));
    w.set("model.normalization.std", as_reals(m.info.stddev));
  }
  if (!m.info.class_names.empty()) w.set("model.class_names", m.info.class_names);
  w.set("model.op_count", static_cast<int64_t>(m.ops.size()));
  for (const auto& [key, value] : m.info.extra) w.set("info." + key, value);

  for (std::size_t i = 0; i < m.ops.size(); ++i) {
    const Op& op = m.ops[i];
    w.set(op_key(i, "kind"), std::string(op_kind_name(op.kind)));
    w.set(op_key(i, "name"), op.name);
    w.set(op_key(i, "inputs"), std::vector<int64_t>(op.inputs.begin(), op.inputs.end()));
    switch (op.kind) {
      case OpKind::quantize: {
        const QuantizeParams& q = op.quantize();
        write_quant(w, i, "", q.quant);
        w.set(op_key(i, "border"), int64_t{q.border});
        w.set(op_key(i, "normalize"), int64_t{q.normalize ? 1 : 0});
        w.set(op_key(i, "code_range"), std::vector<int64_t>{q.min_code, q.max_code});
        write_notes(w, i, op.notes);
        break;
      }
      case OpKind::conv2d:
      case OpKind::linear: {
        const ConvParams& c = op.conv();
        const kernels::WeightSpec& s = c.weights.spec();
        w.set(op_key(i, "weights.shape"), std::vector<int64_t>{s.out_channels, s.in_channels, s.kernel_h, s.kernel_w});
        w.set(op_key(i, "weights.bits"), int64_t{s.bits});
        w.set(op_key(i, "weights.encoding"), std::string(kernels::encoding_name(s.encoding)));
        w.set(op_key(i, "weights.depthwise"), int64_t{s.depthwise ? 1 : 0});
        w.set(op_key(i, "weights.layout"), int64_t{kernels::PackedWeights::kLayoutVersion});
        if (op.kind == OpKind::conv2d) {
          w.set(op_key(i, "stride"), std::vector<int64_t>{c.conv.stride_h, c.conv.stride_w});
          w.set(op_key(i, "padding"), std::vector<int64_t>{c.conv.pad_h, c.conv.pad_w});
        }
        const kernels::Epilogue& e = c.epilogue;
        w.set(op_key(i, "relu"), int64_t{e.relu() ? 1 : 0});
        w.set(op_key(i, "output"), std::string(e.requantizes() ? "packed" : "real"));
        if (e.requantizes()) {
          write_quant(w, i, "out.", e.out_quant());
          w.set(op_key(i, "out.border"), int64_t{e.out_border()});
        }
        const std::span<const uint32_t> words = c.weights.words();
        w.add_tensor(op_key(i, "weights"), DType::u32, {static_cast<int64_t>(words.size())},
                     std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(words.data()), words.size_bytes()));
        w.add_tensor(op_key(i, "scale"), e.scale(), {s.out_channels});
        w.add_tensor(op_key(i, "bias"), e.bias(), {s.out_channels});
        write_notes(w, i, op.notes);
        break;
      }
      case OpKind::add: {
        const AddParams& a = op.add();
        w.set(op_key(i, "shortcut"), std::string(shortcut_kind_name(a.shortcut)));
        w.set(op_key(i, "stride"), int64_t{a.stride});
        w.set(op_key(i, "channel_offset"), a.channel_offset);
        w.set(op_key(i, "relu"), int64_t{a.relu ? 1 : 0});
        break;
      }
      case OpKind::max_pool: {
        const PoolParams& p = op.pool();
        w.set(op_key(i, "kernel"), int64_t{p.kernel});
        w.set(op_key(i, "stride"), int64_t{p.stride});
        w.set(op_key(i, "padding"), int64_t{p.padding});
        break;
      }
      case OpKind::global_avg_pool:
      case OpKind::flatten:
        break;
    }
  }
  return w.serialize();
}

void Model::save(const std::filesystem::path& path) const { write_file_atomic(path, serialize()); }

Model Model::load(const std::filesystem::path& path) { return from_file(BmxFile::load(path)); }

Model Model::parse(std::span<const uint8_t> bytes, std::string source) {
  return from_file(BmxFile::parse(bytes, std::move(source)));
}

Model Model::from_file(const BmxFile& file) {
  Reader r(file);
  const int64_t version = r.integer("model.format_version", 0, std::numeric_limits<int64_t>::max());
  if (version != kModelFormatVersion)
    r.fail(fmt::format("model format version {}, this bitmix reads version {}", version, kModelFormatVersion));
  ModelInfo info;
  info.name = r.string("model.name");
  info.architecture = r.string("model.architecture");
  const std::vector<int64_t> shape = r.ints("model.input_shape", 3, 1, int64_t{1} << 20);
  info.input_shape = Shape(shape.begin(), shape.end());
  if (r.has("model.normalization.mean") || r.has("model.normalization.std")) {
    info.mean = r.reals32("model.normalization.mean", 1 << 20);
    info.stddev = r.reals32("model.normalization.std", 1 << 20);
  }
  if (r.has("model.class_names")) info.class_names = r.strings("model.class_names", 1 << 20);
  for (const auto& [key, value] : file.metadata())
    if (key.rfind("info.", 0) == 0) info.extra[key.substr(5)] = value;
  const int64_t op_count = r.integer("model.op_count", 1, 1 << 16);

  ModelBuilder builder = [&] {
    try {
      return ModelBuilder(std::move(info));
    } catch (const Error& e) {
      r.fail(e.what());
    }
  }();
  for (std::size_t i = 0; i < static_cast<std::size_t>(op_count); ++i) {
    const std::string& kind_name = r.string(op_key(i, "kind"));
    OpKind kind{};
    try {
      kind = parse_op_kind(kind_name);
    } catch (const ArgumentError& e) {
      r.fail(fmt::format("op {}: {}", i, e.what()));
    }
    std::string name = r.string(op_key(i, "name"));
    const std::size_t input_count = kind == OpKind::add ? 2 : 1;
    const std::vector<int64_t> inputs = r.ints(op_key(i, "inputs"), input_count, 0, static_cast<int64_t>(i));
    const auto x = static_cast<int32_t>(inputs[0]);
    try {
      switch (kind) {
        case OpKind::quantize: {
          QuantizeParams q;
          q.quant = r.quant(i, "");
          q.border = r.small(op_key(i, "border"), 0, 16);
          q.normalize = r.flag(op_key(i, "normalize"));
          const std::vector<int64_t> range = r.ints(op_key(i, "code_range"), 2, 0, 255);
          q.min_code = static_cast<int32_t>(range[0]);
          q.max_code = static_cast<int32_t>(range[1]);
          builder.quantize(std::move(name), x, q, r.notes(i));
          break;
        }
        case OpKind::conv2d:
          builder.conv2d(std::move(name), x, read_conv(r, i, kind), r.notes(i));
          break;
        case OpKind::linear:
          builder.linear(std::move(name), x, read_conv(r, i, kind), r.notes(i));
          break;
        case OpKind::add: {
          AddParams a;
          const std::string& shortcut = r.string(op_key(i, "shortcut"));
          if (shortcut == "identity") a.shortcut = ShortcutKind::identity;
          else if (shortcut == "subsample_pad") a.shortcut = ShortcutKind::subsample_pad;
          else r.fail(fmt::format("key '{}' = '{}': expected identity or subsample_pad", op_key(i, "shortcut"), shortcut));
          a.stride = r.small(op_key(i, "stride"), 1, 64);
          a.channel_offset = r.integer(op_key(i, "channel_offset"), 0, int64_t{1} << 20);
          a.relu = r.flag(op_key(i, "relu"));
          builder.add(std::move(name), x, static_cast<int32_t>(inputs[1]), a);
          break;
        }
        case OpKind::global_avg_pool:
          builder.global_avg_pool(std::move(name), x);
          break;
        case OpKind::max_pool: {
          PoolParams p;
          p.kernel = r.small(op_key(i, "kernel"), 1, 64);
          p.stride = r.small(op_key(i, "stride"), 1, 64);
          p.padding = r.small(op_key(i, "padding"), 0, 64);
          builder.max_pool(std::move(name), x, p);
          break;
        }
        case OpKind::flatten:
          builder.flatten(std::move(name), x);
          break;
      }
    } catch (const FormatError&) {
      throw;
    } catch (const Error& e) {
      r.fail(fmt::format("op {} ({}): {}", i, kind_name, e.what()));
    }
  }
  r.check_all_used();
  try {
    return builder.finish(builder.value_count() - 1);
  } catch (const Error& e) {
    r.fail(e.what());
  }
}

}  // namespace bitmix::runtime
