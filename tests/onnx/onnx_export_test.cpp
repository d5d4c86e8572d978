// ONNX QDQ export: a quantization-aware graph model exported with QuantizeLinear /
// DequantizeLinear pairs and re-imported (the pairs become fake_quant nodes, the weight codes
// are folded back into float weights) predicts what the fake-quant model predicts.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <functional>
#include <map>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/graph.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/quantization.hpp"
#include "deploy/onnx_import.hpp"

namespace bitmix::deploy {
namespace {

nn::ModelSpec graph_spec() {
  auto node = [](std::string name, nn::GraphOp op, std::vector<std::string> in, std::string out) {
    nn::GraphNode n;
    n.name = std::move(name);
    n.op = op;
    n.inputs = std::move(in);
    n.output = std::move(out);
    return n;
  };
  auto conv = [&](std::string name, std::string in, std::string out, int64_t cin, int64_t cout, int64_t k,
                  int64_t groups = 1, bool bias = false) {
    nn::GraphNode n = node(std::move(name), nn::GraphOp::conv, {std::move(in)}, std::move(out));
    n.conv = nn::Conv2dOptions::square(cin, cout, k, 1, k / 2, groups, bias);
    return n;
  };
  auto bn = [&](std::string name, std::string in, std::string out, int64_t c, bool relu) {
    nn::GraphNode n = node(std::move(name), nn::GraphOp::batch_norm, {std::move(in)}, std::move(out));
    n.channels = c;
    n.relu = relu;
    return n;
  };
  nn::GraphSpec g;
  g.nodes = {conv("stem", "input", "c", 2, 8, 3), bn("stem_bn", "c", "s", 8, true),
             conv("dw", "s", "d0", 8, 8, 3, 8), bn("dw_bn", "d0", "d1", 8, false),
             node("dw_relu6", nn::GraphOp::relu6, {"d1"}, "d"), conv("pw", "d", "p", 8, 8, 1, 1, true),
             node("add", nn::GraphOp::add, {"p", "s"}, "sum"), node("cat", nn::GraphOp::concat, {"sum", "d"}, "cat")};
  nn::GraphNode pool = node("pool", nn::GraphOp::avg_pool, {"cat"}, "m");
  pool.pool = nn::Pool2dOptions::square(2, 2);
  g.nodes.push_back(pool);
  g.nodes.push_back(node("gap", nn::GraphOp::global_avg_pool, {"m"}, "v"));
  nn::GraphNode fc = node("fc", nn::GraphOp::linear, {"v"}, "logits");
  fc.in_features = 16;
  fc.out_features = 4;
  g.nodes.push_back(fc);
  g.output = "logits";
  nn::ModelSpec spec;
  spec.arch = "graph";
  spec.in_channels = 2;
  spec.image_height = spec.image_width = 8;
  spec.num_classes = 4;
  spec.seed = 5;
  spec.graph = g;
  return spec;
}

Tensor random_images(Rng& rng, int64_t n) {
  Tensor x({n, 2, 8, 8});
  for (float& v : x.values()) v = rng.normal(0.0f, 1.0f);
  return x;
}

TEST(OnnxExport, ReimportedQdqModelPredictsWhatTheFakeQuantModelPredicts) {
  struct Case {
    int w, a;
    quant::QuantizerKind wk, ak;
  };
  for (const Case& c : {Case{4, 4, quant::QuantizerKind::lsq, quant::QuantizerKind::lsq},
                        Case{2, 3, quant::QuantizerKind::lsq, quant::QuantizerKind::lsq},
                        Case{3, 2, quant::QuantizerKind::symmetric, quant::QuantizerKind::uniform}}) {
    SCOPED_TRACE(::testing::Message() << "W" << c.w << "A" << c.a);
    const nn::ModelSpec spec = graph_spec();
    auto model = nn::make_model(spec);
    const Shape image = {2, 8, 8};
    Rng rng(11);
    model->train();
    for (int i = 0; i < 4; ++i) model->forward(random_images(rng, 16));  // BatchNorm statistics
    const quant::BitConfig config = nn::uniform_bit_config(*model, image, "graph", nn::UniformBits{c.w, c.a, c.wk, c.ak});
    nn::apply_bit_config(*model, image, config);
    model->eval();
    std::vector<Tensor> batches = {random_images(rng, 16), random_images(rng, 16)};
    nn::calibrate_quantizers(*model, batches);
    model->forward(batches[0]);

    OnnxExportOptions o;
    o.mean = {0.0f, 0.0f};
    o.stddev = {1.0f, 1.0f};
    o.bit_config_json = config.to_json();
    const std::string bytes = export_onnx_qdq(*model, spec, o);
    onnx::ModelProto proto;
    ASSERT_TRUE(proto.ParseFromString(bytes));
    std::map<std::string, int> ops;
    for (const onnx::NodeProto& n : proto.graph().node()) ++ops[n.op_type()];
    EXPECT_EQ(ops["QuantizeLinear"], 4);    // one per quantized layer (stem, dw, pw, fc)
    EXPECT_EQ(ops["DequantizeLinear"], 8);  // and one per weight
    bool has_bits = false;
    for (const auto& p : proto.metadata_props()) has_bits |= p.key() == "bitmix.bit_config" && p.value() == o.bit_config_json;
    EXPECT_TRUE(has_bits);

    OnnxImport back = import_onnx_bytes(bytes, "qdq.onnx");
    int fake_quant = 0;
    for (const nn::GraphNode& n : back.spec.graph->nodes) fake_quant += n.op == nn::GraphOp::fake_quant;
    EXPECT_EQ(fake_quant, 4);
    const Tensor x = random_images(rng, 256);
    const Tensor want = model->forward(x);
    const Tensor& got = back.model->forward(x);
    ASSERT_EQ(got.shape(), want.shape());
    int agree = 0;
    double max_diff = 0, max_logit = 0;
    for (int64_t i = 0; i < x.dim(0); ++i) {
      int64_t a = 0, b = 0;
      for (int64_t k = 0; k < 4; ++k) {
        if (want[i * 4 + k] > want[i * 4 + a]) a = k;
        if (got[i * 4 + k] > got[i * 4 + b]) b = k;
        max_diff = std::max(max_diff, std::abs(double{want[i * 4 + k]} - double{got[i * 4 + k]}));
        max_logit = std::max(max_logit, std::abs(double{want[i * 4 + k]}));
      }
      agree += a == b;
    }
    // The two round x / s (ONNX) and x * (1 / s) (bitmix) and sum in different orders, so an
    // input within float rounding of a rounding threshold may take the other code.
    EXPECT_GE(agree, 255) << "of 256";
    EXPECT_LE(max_diff, 0.05 * max_logit);
  }
}

// A calibrated W4A4 graph model's QDQ export.
std::string exported_model() {
  const nn::ModelSpec spec = graph_spec();
  auto model = nn::make_model(spec);
  nn::apply_bit_config(*model, {2, 8, 8}, nn::uniform_bit_config(*model, {2, 8, 8}, "graph", nn::UniformBits{4, 4}));
  model->eval();
  Rng rng(3);
  const std::vector<Tensor> batches = {random_images(rng, 8)};
  nn::calibrate_quantizers(*model, batches);
  model->forward(batches[0]);
  return export_onnx_qdq(*model, spec, {});
}

void expect_import_refused(const std::function<void(onnx::ModelProto&)>& edit, const std::string& fragment) {
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(exported_model()));
  edit(m);
  try {
    import_onnx_bytes(m.SerializeAsString(), "qdq.onnx");
    ADD_FAILURE() << "imported; expected '" << fragment << "'";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

onnx::NodeProto* node_named(onnx::ModelProto& m, const std::string& name) {
  for (onnx::NodeProto& n : *m.mutable_graph()->mutable_node())
    if (n.name() == name) return &n;
  throw Error("no node " + name);
}

TEST(OnnxExport, QdqPairsThatDoNotMatchAreRefusedOnImport) {
  expect_import_refused([](onnx::ModelProto& m) { node_named(m, "pw.input_dequantize")->set_input(1, "dw.input_scale"); },
                        "node 'pw.input_dequantize' (DequantizeLinear): scale and zero point differ");
  expect_import_refused([](onnx::ModelProto& m) { node_named(m, "pw")->set_input(0, "pw.input_codes"); },
                        "node 'pw' (Conv): input 'pw.input_codes' is not produced");
  expect_import_refused(
      [](onnx::ModelProto& m) {
        for (onnx::TensorProto& t : *m.mutable_graph()->mutable_initializer())
          if (t.name() == "pw.input_zero_point") t.set_data_type(onnx::TensorProto_DataType_INT32);
      },
      "node 'pw.input_quantize' (QuantizeLinear): zero point of data type 6");
}

TEST(OnnxExport, ZooModelsAndModelsWithoutQuantizerStateAreRefused) {
  nn::ModelSpec zoo;
  zoo.arch = "resnet8";
  zoo.width = 4;
  zoo.image_height = zoo.image_width = 8;
  auto model = nn::make_model(zoo);
  EXPECT_THROW(export_onnx_qdq(*model, zoo, {}), ArgumentError);

  const nn::ModelSpec spec = graph_spec();
  auto graph = nn::make_model(spec);
  nn::apply_bit_config(*graph, {2, 8, 8}, nn::uniform_bit_config(*graph, {2, 8, 8}, "graph", nn::UniformBits{4, 4}));
  try {
    export_onnx_qdq(*graph, spec, {});  // activation quantizers never saw data
    ADD_FAILURE() << "exported uninitialized quantizers";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'stem': input quantizer"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bitmix::deploy
