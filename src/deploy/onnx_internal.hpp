#pragma once
// Shared by the ONNX importer's translation units: decoding tensors and attributes, and
// folding nodes whose inputs are all constants (initializer-only subgraphs: shape arithmetic,
// casts, reshapes of weights).
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace bitmix::deploy::onnx_detail {

// A constant tensor. Values are held as doubles: float weights convert exactly, and int64
// shape values are far below 2^53.
struct Constant {
  std::vector<int64_t> dims;
  std::vector<double> values;
  bool integer = false;  // INT64 / INT32 (shape arithmetic) rather than FLOAT
  int64_t numel() const;
};

// "node 'conv1' (Conv)": how messages name a node.
std::string node_label(const onnx::NodeProto& node, int index);

// Decodes an initializer or a Constant's value; `what` names it in messages ("initializer
// 'fc.weight'"). Refuses external data, data types other than FLOAT/INT64/INT32, and sizes that
// do not match the dims.
Constant decode_tensor(const onnx::TensorProto& t, std::string_view source, const std::string& what);

// Attribute access naming the node and attribute on failure.
class Attributes {
 public:
  // Refuses any attribute not in `known` (an attribute bitmix does not implement changes the
  // operator's meaning, so it is never ignored).
  Attributes(const onnx::NodeProto& node, std::string label, std::string_view source,
             std::initializer_list<std::string_view> known);
  bool has(std::string_view name) const;
  int64_t integer(std::string_view name, int64_t fallback) const;
  float real(std::string_view name, float fallback) const;
  std::string text(std::string_view name, std::string fallback) const;
  std::vector<int64_t> integers(std::string_view name, std::vector<int64_t> fallback) const;
  const onnx::TensorProto& tensor(std::string_view name) const;
  [[noreturn]] void fail(std::string_view name, const std::string& value, std::string_view expected) const;
  const std::string& label() const { return label_; }

 private:
  const onnx::AttributeProto* find(std::string_view name, onnx::AttributeProto::AttributeType type) const;
  const onnx::NodeProto& node_;
  std::string label_;
  std::string_view source_;
};

// Whether op_type has a constant-folding rule; folds `node` whose inputs are all in `constants`
// and returns its outputs. Throws FormatError naming the node for an attribute or shape it
// cannot fold.
bool can_fold(const std::string& op_type);
std::vector<Constant> fold(const onnx::NodeProto& node, const std::string& label, std::string_view source,
                           const std::map<std::string, Constant>& constants);

std::string dims_text(const std::vector<int64_t>& dims);

}  // namespace bitmix::deploy::onnx_detail
