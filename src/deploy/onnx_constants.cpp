// The ONNX importer's constants: decoding TensorProto data, reading attributes strictly, and
// folding initializer-only subgraphs (the shape arithmetic and weight reshapes exporters emit).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "bitmix/core/error.hpp"
#include "onnx_internal.hpp"

namespace bitmix::deploy::onnx_detail {

int64_t Constant::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::string dims_text(const std::vector<int64_t>& dims) { return fmt::format("[{}]", fmt::join(dims, ", ")); }

std::string node_label(const onnx::NodeProto& node, int index) {
  return node.name().empty() ? fmt::format("node #{} ({})", index, node.op_type())
                             : fmt::format("node '{}' ({})", node.name(), node.op_type());
}

Constant decode_tensor(const onnx::TensorProto& t, std::string_view source, const std::string& what) {
  if (t.data_location() == onnx::TensorProto_DataLocation_EXTERNAL || t.external_data_size() > 0)
    throw FormatError(fmt::format("{}: {}: its data is in an external file; bitmix reads self-contained models only "
                                  "(save with onnx.save_model(..., save_as_external_data=False))",
                                  source, what));
  if (t.has_segment()) throw FormatError(fmt::format("{}: {}: segmented tensors are not supported", source, what));
  Constant c;
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || d > (int64_t{1} << 31)) throw FormatError(fmt::format("{}: {}: dimension {} out of range", source, what, d));
    n *= d;
    if (n > (int64_t{1} << 31)) throw FormatError(fmt::format("{}: {}: more than 2^31 elements", source, what));
    c.dims.push_back(d);
  }
  const auto count = static_cast<std::size_t>(n);
  c.values.resize(count);
  auto from_raw = [&](auto sample) {
    using T = decltype(sample);
    if (t.raw_data().size() != count * sizeof(T))
      throw FormatError(fmt::format("{}: {}: {} bytes of raw data for {} elements of dims {} (expected {})", source, what,
                                    t.raw_data().size(), count, dims_text(c.dims), count * sizeof(T)));
    for (std::size_t i = 0; i < count; ++i) {
      T v;
      std::memcpy(&v, t.raw_data().data() + i * sizeof(T), sizeof(T));  // ONNX raw data is little endian, as is x86/ARM
      c.values[i] = static_cast<double>(v);
    }
  };
  auto from_field = [&](const auto& field, const char* name) {
    if (static_cast<std::size_t>(field.size()) != count)
      throw FormatError(fmt::format("{}: {}: {} values in {} for dims {} ({} elements)", source, what, field.size(), name,
                                    dims_text(c.dims), count));
    for (std::size_t i = 0; i < count; ++i) c.values[i] = static_cast<double>(field[static_cast<int>(i)]);
  };
  switch (t.data_type()) {
    case onnx::TensorProto_DataType_FLOAT:
      if (t.has_raw_data()) from_raw(float{});
      else from_field(t.float_data(), "float_data");
      for (double v : c.values)
        if (!std::isfinite(v)) throw FormatError(fmt::format("{}: {}: a value is not finite", source, what));
      break;
    case onnx::TensorProto_DataType_INT64:
      c.integer = true;
      if (t.has_raw_data()) from_raw(int64_t{});
      else from_field(t.int64_data(), "int64_data");
      break;
    case onnx::TensorProto_DataType_INT32:
      c.integer = true;
      if (t.has_raw_data()) from_raw(int32_t{});
      else from_field(t.int32_data(), "int32_data");
      break;
    default:
      throw FormatError(fmt::format("{}: {}: data type {} is not supported (bitmix imports float32 models; shape "
                                    "tensors may be int64 or int32)",
                                    source, what,
                                    onnx::TensorProto_DataType_IsValid(t.data_type())
                                        ? onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(t.data_type()))
                                        : std::to_string(t.data_type())));
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
Attributes::Attributes(const onnx::NodeProto& node, std::string label, std::string_view source,
                       std::initializer_list<std::string_view> known)
    : node_(node), label_(std::move(label)), source_(source) {
  for (const onnx::AttributeProto& a : node.attribute()) {
    if (std::find(known.begin(), known.end(), a.name()) == known.end())
      throw FormatError(fmt::format("{}: {}: attribute '{}' is not supported{}", source_, label_, a.name(),
                                    known.size() == 0 ? std::string()
                                                      : fmt::format(" (bitmix reads {})", fmt::join(known, ", "))));
    if (!a.ref_attr_name().empty())
      throw FormatError(fmt::format("{}: {}: attribute '{}' refers to a function attribute", source_, label_, a.name()));
  }
}

const onnx::AttributeProto* Attributes::find(std::string_view name, onnx::AttributeProto::AttributeType type) const {
  for (const onnx::AttributeProto& a : node_.attribute())
    if (a.name() == name) {
      if (a.type() != type)
        throw FormatError(fmt::format("{}: {}: attribute '{}' has type {}, expected {}", source_, label_, name,
                                      onnx::AttributeProto::AttributeType_Name(a.type()),
                                      onnx::AttributeProto::AttributeType_Name(type)));
      return &a;
    }
  return nullptr;
}

bool Attributes::has(std::string_view name) const {
  return std::any_of(node_.attribute().begin(), node_.attribute().end(),
                     [&](const onnx::AttributeProto& a) { return a.name() == name; });
}

int64_t Attributes::integer(std::string_view name, int64_t fallback) const {
  const auto* a = find(name, onnx::AttributeProto::INT);
  return a != nullptr ? a->i() : fallback;
}
float Attributes::real(std::string_view name, float fallback) const {
  const auto* a = find(name, onnx::AttributeProto::FLOAT);
  return a != nullptr ? a->f() : fallback;
}
std::string Attributes::text(std::string_view name, std::string fallback) const {
  const auto* a = find(name, onnx::AttributeProto::STRING);
  return a != nullptr ? a->s() : fallback;
}
std::vector<int64_t> Attributes::integers(std::string_view name, std::vector<int64_t> fallback) const {
  const auto* a = find(name, onnx::AttributeProto::INTS);
  return a != nullptr ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : fallback;
}
const onnx::TensorProto& Attributes::tensor(std::string_view name) const {
  const auto* a = find(name, onnx::AttributeProto::TENSOR);
  if (a == nullptr) throw FormatError(fmt::format("{}: {}: missing attribute '{}'", source_, label_, name));
  return a->t();
}
void Attributes::fail(std::string_view name, const std::string& value, std::string_view expected) const {
  throw FormatError(fmt::format("{}: {}: attribute '{}' = {}: {}", source_, label_, name, value, expected));
}

// ---------------------------------------------------------------------------------------------
namespace {

int64_t normalized_axis(int64_t axis, std::size_t rank, const Attributes& attrs, std::string_view name) {
  const auto r = static_cast<int64_t>(rank);
  if (axis < -r || axis >= r) attrs.fail(name, std::to_string(axis), fmt::format("an axis of a rank-{} tensor", rank));
  return axis < 0 ? axis + r : axis;
}

const Constant& input(const onnx::NodeProto& node, int i, const std::map<std::string, Constant>& constants) {
  auto it = i < node.input_size() ? constants.find(node.input(i)) : constants.end();
  if (it == constants.end())
    throw FormatError(fmt::format("node '{}' ({}): input {} is missing", node.name(), node.op_type(), i));
  return it->second;
}

}  // namespace

bool can_fold(const std::string& op) {
  static const char* const kOps[] = {"Identity", "Cast",   "Reshape", "Unsqueeze", "Squeeze", "Concat", "Gather",
                                     "Shape",    "Add",    "Sub",     "Mul",       "Div",     "Transpose", "Sqrt",
                                     "Neg",      "Flatten"};
  return std::any_of(std::begin(kOps), std::end(kOps), [&](const char* o) { return op == o; });
}

std::vector<Constant> fold(const onnx::NodeProto& node, const std::string& label, std::string_view source,
                           const std::map<std::string, Constant>& constants) {
  const std::string& op = node.op_type();
  auto bad = [&](const std::string& what) {
    return FormatError(fmt::format("{}: {} on constants: {}", source, label, what));
  };
  if (node.input_size() < 1) throw bad("no inputs");
  const Constant& x = input(node, 0, constants);
  Constant out;
  if (op == "Identity") {
    (void)Attributes(node, label, source, {});
    return {x};
  }
  if (op == "Cast") {
    const Attributes a(node, label, source, {"to", "saturate"});
    const int64_t to = a.integer("to", 0);
    out = x;
    if (to == onnx::TensorProto_DataType_FLOAT) out.integer = false;
    else if (to == onnx::TensorProto_DataType_INT64 || to == onnx::TensorProto_DataType_INT32) {
      out.integer = true;
      for (double& v : out.values) v = std::trunc(v);
    } else {
      a.fail("to", std::to_string(to), "FLOAT, INT64 or INT32");
    }
    return {out};
  }
  if (op == "Sqrt" || op == "Neg") {
    (void)Attributes(node, label, source, {});
    out = x;
    for (double& v : out.values) v = op == "Sqrt" ? std::sqrt(v) : -v;
    return {out};
  }
  if (op == "Shape") {
    const Attributes a(node, label, source, {"start", "end"});
    const auto rank = static_cast<int64_t>(x.dims.size());
    int64_t start = a.integer("start", 0), end = a.integer("end", rank);
    start = std::clamp(start < 0 ? start + rank : start, int64_t{0}, rank);
    end = std::clamp(end < 0 ? end + rank : end, int64_t{0}, rank);
    out.integer = true;
    for (int64_t i = start; i < end; ++i) out.values.push_back(static_cast<double>(x.dims[static_cast<std::size_t>(i)]));
    out.dims = {static_cast<int64_t>(out.values.size())};
    return {out};
  }
  if (op == "Reshape" || op == "Flatten") {
    std::vector<int64_t> shape;
    if (op == "Flatten") {
      const Attributes a(node, label, source, {"axis"});
      const int64_t axis = normalized_axis(a.integer("axis", 1), x.dims.size() + 1, a, "axis");
      int64_t lo = 1, hi = 1;
      for (std::size_t i = 0; i < x.dims.size(); ++i) (static_cast<int64_t>(i) < axis ? lo : hi) *= x.dims[i];
      shape = {lo, hi};
    } else {
      const Attributes a(node, label, source, {"allowzero"});
      if (node.input_size() != 2) throw bad("expected data and shape inputs");
      const Constant& s = input(node, 1, constants);
      int64_t known = 1, infer = -1;
      for (std::size_t i = 0; i < s.values.size(); ++i) {
        int64_t d = static_cast<int64_t>(s.values[i]);
        if (d == 0 && a.integer("allowzero", 0) == 0) d = i < x.dims.size() ? x.dims[i] : 0;
        if (d == -1) {
          if (infer >= 0) throw bad("two -1 entries in the shape");
          infer = static_cast<int64_t>(i);
        } else if (d < 0) {
          throw bad(fmt::format("shape entry {}", d));
        } else {
          known *= d;
        }
        shape.push_back(d);
      }
      if (infer >= 0) {
        if (known == 0 || x.numel() % known != 0) throw bad(fmt::format("cannot reshape {} to {}", dims_text(x.dims), dims_text(shape)));
        shape[static_cast<std::size_t>(infer)] = x.numel() / known;
      }
    }
    out = x;
    out.dims = shape;
    if (out.numel() != x.numel()) throw bad(fmt::format("cannot reshape {} to {}", dims_text(x.dims), dims_text(shape)));
    return {out};
  }
  if (op == "Unsqueeze" || op == "Squeeze") {
    // Opset 13 moved axes from an attribute to an input.
    const Attributes a(node, label, source, {"axes"});
    std::vector<int64_t> axes = a.integers("axes", {});
    if (node.input_size() > 1) {
      const Constant& c = input(node, 1, constants);
      for (double v : c.values) axes.push_back(static_cast<int64_t>(v));
    }
    out = x;
    if (op == "Unsqueeze") {
      const std::size_t rank = x.dims.size() + axes.size();
      for (int64_t& ax : axes) ax = normalized_axis(ax, rank, a, "axes");
      std::sort(axes.begin(), axes.end());
      for (int64_t ax : axes) out.dims.insert(out.dims.begin() + ax, 1);
    } else {
      if (axes.empty()) {
        out.dims.erase(std::remove(out.dims.begin(), out.dims.end(), int64_t{1}), out.dims.end());
      } else {
        for (int64_t& ax : axes) ax = normalized_axis(ax, x.dims.size(), a, "axes");
        std::sort(axes.rbegin(), axes.rend());
        for (int64_t ax : axes) {
          if (out.dims[static_cast<std::size_t>(ax)] != 1) throw bad(fmt::format("squeezing axis {} of size != 1", ax));
          out.dims.erase(out.dims.begin() + ax);
        }
      }
    }
    return {out};
  }
  if (op == "Concat") {
    const Attributes a(node, label, source, {"axis"});
    const int64_t axis = normalized_axis(a.integer("axis", 0), x.dims.size(), a, "axis");
    if (axis != 0 && x.dims.size() != 1) throw bad("constant concatenation is folded along axis 0 of vectors only");
    out.dims = {0};
    out.integer = x.integer;
    for (int i = 0; i < node.input_size(); ++i) {
      const Constant& c = input(node, i, constants);
      if (c.dims.size() != 1) throw bad("constant concatenation is folded for vectors only");
      out.values.insert(out.values.end(), c.values.begin(), c.values.end());
    }
    out.dims[0] = static_cast<int64_t>(out.values.size());
    return {out};
  }
  if (op == "Gather") {
    const Attributes a(node, label, source, {"axis"});
    if (normalized_axis(a.integer("axis", 0), x.dims.size(), a, "axis") != 0 || x.dims.size() != 1)
      throw bad("gathering is folded along axis 0 of vectors only");
    const Constant& idx = input(node, 1, constants);
    out.integer = x.integer;
    out.dims = idx.dims;
    for (double v : idx.values) {
      auto i = static_cast<int64_t>(v);
      if (i < 0) i += x.dims[0];
      if (i < 0 || i >= x.dims[0]) throw bad(fmt::format("index {} out of range", static_cast<int64_t>(v)));
      out.values.push_back(x.values[static_cast<std::size_t>(i)]);
    }
    return {out};
  }
  if (op == "Transpose") {
    const Attributes a(node, label, source, {"perm"});
    const std::vector<int64_t> perm = a.integers("perm", {1, 0});
    if (x.dims.size() != 2 || perm != std::vector<int64_t>{1, 0}) throw bad("only 2-D transposes are folded");
    out = x;
    out.dims = {x.dims[1], x.dims[0]};
    for (int64_t i = 0; i < x.dims[0]; ++i)
      for (int64_t j = 0; j < x.dims[1]; ++j)
        out.values[static_cast<std::size_t>(j * x.dims[0] + i)] = x.values[static_cast<std::size_t>(i * x.dims[1] + j)];
    return {out};
  }
  // Elementwise binary with equal shapes or a one-element operand.
  (void)Attributes(node, label, source, {});
  if (node.input_size() != 2) throw bad("expected two inputs");
  const Constant& y = input(node, 1, constants);
  const bool x_scalar = x.numel() == 1, y_scalar = y.numel() == 1;
  if (x.dims != y.dims && !x_scalar && !y_scalar)
    throw bad(fmt::format("broadcasting {} with {} is not folded", dims_text(x.dims), dims_text(y.dims)));
  out = y_scalar || x.dims == y.dims ? x : y;
  out.integer = x.integer && y.integer;
  for (std::size_t i = 0; i < out.values.size(); ++i) {
    const double p = x.values[x_scalar ? 0 : i], q = y.values[y_scalar ? 0 : i];
    double r = 0;
    if (op == "Add") r = p + q;
    else if (op == "Sub") r = p - q;
    else if (op == "Mul") r = p * q;
    else {
      if (q == 0) throw bad("division by zero");
      r = out.integer ? std::trunc(p / q) : p / q;
    }
    out.values[i] = r;
  }
  return {out};
}

}  // namespace bitmix::deploy::onnx_detail
