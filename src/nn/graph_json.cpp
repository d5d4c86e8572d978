// The JSON form of a GraphSpec: the "graph" field of a model spec in checkpoint metadata.
//   {"input": "input", "output": "logits",
//    "nodes": [{"name": "conv1", "op": "conv", "inputs": ["input"], "output": "t1",
//               "in_channels": 3, "out_channels": 16, "kernel": [3, 3], "stride": [1, 1],
//               "pad": [1, 1], "groups": 1, "bias": false}, ...]}
// A node carries exactly the fields of its op (graph.hpp); reading refuses any other key.
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/graph.hpp"
#include "core/strict_json.hpp"

namespace bitmix::nn {
namespace {

using Json = nlohmann::json;

constexpr GraphOp kOps[] = {GraphOp::conv,    GraphOp::batch_norm, GraphOp::relu,   GraphOp::relu6,
                            GraphOp::max_pool, GraphOp::avg_pool,  GraphOp::global_avg_pool, GraphOp::flatten,
                            GraphOp::linear,  GraphOp::add,        GraphOp::concat};

std::vector<std::string_view> op_keys(GraphOp op) {
  switch (op) {
    case GraphOp::conv: return {"in_channels", "out_channels", "kernel", "stride", "pad", "groups", "bias"};
    case GraphOp::batch_norm: return {"channels", "eps", "momentum", "relu"};
    case GraphOp::max_pool:
    case GraphOp::avg_pool: return {"kernel", "stride", "pad"};
    case GraphOp::linear: return {"in_features", "out_features", "bias"};
    default: return {};
  }
}

class NodeReader {
 public:
  NodeReader(const Json& j, std::string where) : j_(j), where_(std::move(where)) {}
  [[noreturn]] void fail(std::string_view key, std::string_view expected) const {
    throw FormatError(fmt::format("{}: field '{}' = {}: expected {}", where_, key,
                                  j_.contains(key) ? j_.at(std::string(key)).dump() : std::string("(missing)"), expected));
  }
  const Json& need(std::string_view key) const {
    if (!j_.contains(key)) throw FormatError(fmt::format("{}: missing field '{}'", where_, key));
    return j_.at(std::string(key));
  }
  int64_t integer(std::string_view key, int64_t lo, int64_t hi) const {
    const Json& v = need(key);
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) ||
        v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      fail(key, fmt::format("an integer from {} to {}", lo, hi));
    return v.get<int64_t>();
  }
  std::pair<int64_t, int64_t> pair(std::string_view key, int64_t lo, int64_t hi) const {
    const Json& v = need(key);
    if (!v.is_array() || v.size() != 2) fail(key, "[h, w]");
    for (const Json& e : v)
      if (!e.is_number_integer() || e.get<int64_t>() < lo || e.get<int64_t>() > hi)
        fail(key, fmt::format("[h, w] of integers from {} to {}", lo, hi));
    return {v[0].get<int64_t>(), v[1].get<int64_t>()};
  }
  std::string string(std::string_view key) const {
    const Json& v = need(key);
    if (!v.is_string()) fail(key, "a string");
    return v.get<std::string>();
  }
  bool boolean(std::string_view key) const {
    const Json& v = need(key);
    if (!v.is_boolean()) fail(key, "true or false");
    return v.get<bool>();
  }
  float real(std::string_view key) const {
    const Json& v = need(key);
    if (!v.is_number()) fail(key, "a number");
    return v.get<float>();
  }

 private:
  const Json& j_;
  std::string where_;
};

constexpr int64_t kMax = int64_t{1} << 20;

}  // namespace

std::string graph_spec_to_json(const GraphSpec& spec) {
  Json nodes = Json::array();
  for (const GraphNode& n : spec.nodes) {
    Json j = {{"name", n.name}, {"op", graph_op_name(n.op)}, {"inputs", n.inputs}, {"output", n.output}};
    switch (n.op) {
      case GraphOp::conv:
        j["in_channels"] = n.conv.in_channels;
        j["out_channels"] = n.conv.out_channels;
        j["kernel"] = {n.conv.kernel_h, n.conv.kernel_w};
        j["stride"] = {n.conv.stride_h, n.conv.stride_w};
        j["pad"] = {n.conv.pad_h, n.conv.pad_w};
        j["groups"] = n.conv.groups;
        j["bias"] = n.conv.bias;
        break;
      case GraphOp::batch_norm:
        j["channels"] = n.channels;
        j["eps"] = n.eps;
        j["momentum"] = n.momentum;
        j["relu"] = n.relu;
        break;
      case GraphOp::max_pool:
      case GraphOp::avg_pool:
        j["kernel"] = {n.pool.kernel_h, n.pool.kernel_w};
        j["stride"] = {n.pool.stride_h, n.pool.stride_w};
        j["pad"] = {n.pool.pad_h, n.pool.pad_w};
        break;
      case GraphOp::linear:
        j["in_features"] = n.in_features;
        j["out_features"] = n.out_features;
        j["bias"] = n.bias;
        break;
      default:
        break;
    }
    nodes.push_back(std::move(j));
  }
  return Json{{"input", spec.input}, {"output", spec.output}, {"nodes", nodes}}.dump();
}

GraphSpec graph_spec_from_json(std::string_view text) {
  const Json root = bitmix::detail::parse_json_strict(text, "graph");
  if (!root.is_object()) throw FormatError("graph: expected a JSON object");
  for (const auto& [key, value] : root.items())
    if (key != "input" && key != "output" && key != "nodes")
      throw FormatError(fmt::format("graph: unknown field '{}' (expected input, output, nodes)", key));
  const NodeReader top(root, "graph");
  GraphSpec spec;
  spec.input = top.string("input");
  spec.output = top.string("output");
  const Json& nodes = top.need("nodes");
  if (!nodes.is_array()) top.fail("nodes", "an array of nodes");
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const Json& j = nodes[i];
    const std::string where = fmt::format("graph node {}", i);
    if (!j.is_object()) throw FormatError(fmt::format("{}: expected a JSON object", where));
    const NodeReader r(j, where);
    GraphNode n;
    n.name = r.string("name");
    const std::string op = r.string("op");
    const auto* it = std::find_if(std::begin(kOps), std::end(kOps), [&](GraphOp o) { return graph_op_name(o) == op; });
    if (it == std::end(kOps)) r.fail("op", "conv, batch_norm, relu, relu6, max_pool, avg_pool, global_avg_pool, "
                                           "flatten, linear, add or concat");
    n.op = *it;
    const NodeReader nr(j, fmt::format("graph node '{}' ({})", n.name, op));
    std::vector<std::string_view> keys = {"name", "op", "inputs", "output"};
    for (std::string_view k : op_keys(n.op)) keys.push_back(k);
    for (const auto& [key, value] : j.items())
      if (std::find(keys.begin(), keys.end(), key) == keys.end())
        throw FormatError(fmt::format("graph node '{}' ({}): unknown field '{}'", n.name, op, key));
    const Json& inputs = nr.need("inputs");
    if (!inputs.is_array() || !std::all_of(inputs.begin(), inputs.end(), [](const Json& e) { return e.is_string(); }))
      nr.fail("inputs", "an array of tensor names");
    for (const Json& e : inputs) n.inputs.push_back(e.get<std::string>());
    n.output = nr.string("output");
    switch (n.op) {
      case GraphOp::conv: {
        n.conv.in_channels = nr.integer("in_channels", 1, kMax);
        n.conv.out_channels = nr.integer("out_channels", 1, kMax);
        std::tie(n.conv.kernel_h, n.conv.kernel_w) = nr.pair("kernel", 1, 1024);
        std::tie(n.conv.stride_h, n.conv.stride_w) = nr.pair("stride", 1, 1024);
        std::tie(n.conv.pad_h, n.conv.pad_w) = nr.pair("pad", 0, 1024);
        n.conv.groups = nr.integer("groups", 1, kMax);
        n.conv.bias = nr.boolean("bias");
        break;
      }
      case GraphOp::batch_norm:
        n.channels = nr.integer("channels", 1, kMax);
        n.eps = nr.real("eps");
        n.momentum = nr.real("momentum");
        n.relu = nr.boolean("relu");
        break;
      case GraphOp::max_pool:
      case GraphOp::avg_pool:
        std::tie(n.pool.kernel_h, n.pool.kernel_w) = nr.pair("kernel", 1, 1024);
        std::tie(n.pool.stride_h, n.pool.stride_w) = nr.pair("stride", 1, 1024);
        std::tie(n.pool.pad_h, n.pool.pad_w) = nr.pair("pad", 0, 1024);
        break;
      case GraphOp::linear:
        n.in_features = nr.integer("in_features", 1, int64_t{1} << 30);
        n.out_features = nr.integer("out_features", 1, int64_t{1} << 30);
        n.bias = nr.boolean("bias");
        break;
      default:
        break;
    }
    spec.nodes.push_back(std::move(n));
  }
  try {
    spec.validate();
  } catch (const ArgumentError& e) {
    throw FormatError(e.what());
  }
  return spec;
}

}  // namespace bitmix::nn
