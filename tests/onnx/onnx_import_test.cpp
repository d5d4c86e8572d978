// ONNX import: models exported by PyTorch at test time (tests/onnx/make_torch_models.py, run by
// ctest before this suite) give PyTorch's logits; models built here with protobuf check constant
// folding and MatMul + Add fusion, and every refusal with its message.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/graph.hpp"
#include "deploy/onnx_import.hpp"

namespace bitmix::deploy {
namespace {

// ---- PyTorch's models ---------------------------------------------------------------------------

Tensor read_f32(const std::filesystem::path& path, const Shape& shape) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  Tensor t(shape);
  EXPECT_EQ(bytes.size(), static_cast<std::size_t>(t.numel()) * 4) << path;
  std::memcpy(t.data(), bytes.data(), std::min(bytes.size(), static_cast<std::size_t>(t.numel()) * 4));
  return t;
}

TEST(OnnxImport, PyTorchModelsGivePyTorchsLogits) {
  const char* dir_env = std::getenv("BITMIX_ONNX_MODELS");
  const std::filesystem::path dir = dir_env != nullptr ? dir_env : "";
  if (dir.empty() || !std::filesystem::exists(dir / "models.txt"))
    GTEST_SKIP() << "no PyTorch-exported models (python3-torch missing; make_torch_models.py skipped)";
  std::istringstream list(read_file_text(dir / "models.txt"));
  int models = 0;
  for (std::string name; list >> name;) {
    int64_t n = 0, c = 0, h = 0, w = 0, classes = 0;
    list >> n >> c >> h >> w >> classes;
    SCOPED_TRACE(name);
    OnnxImport imported = import_onnx(dir / (name + ".onnx"));
    EXPECT_EQ(imported.spec.arch, "graph");
    EXPECT_EQ(imported.spec.in_channels, c);
    EXPECT_EQ(imported.spec.num_classes, classes);
    const Tensor x = read_f32(dir / (name + ".input.f32"), {n, c, h, w});
    const Tensor want = read_f32(dir / (name + ".logits.f32"), {n, classes});
    const Tensor& got = imported.model->forward(x);
    ASSERT_EQ(got.shape(), want.shape());
    double max_ref = 0, max_err = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      max_ref = std::max(max_ref, std::abs(double{want[i]}));
      max_err = std::max(max_err, std::abs(double{got[i]} - double{want[i]}));
    }
    EXPECT_GT(max_ref, 1e-3);
    EXPECT_LE(max_err, 1e-4 * max_ref) << "largest difference " << max_err << " for logits up to " << max_ref;
    // Layer names come from PyTorch's parameter names.
    const auto layers = imported.model->quantizable_layers({c, h, w});
    if (name == "resnet") {
      ASSERT_EQ(layers.size(), 9u);
      EXPECT_EQ(layers.front().name, "conv1");
      EXPECT_EQ(layers[5].name, "layer2_0_shortcut_0");
      EXPECT_EQ(layers.back().name, "fc");
    }
    if (name == "mobilenet") {
      int depthwise = 0;
      for (const auto& l : layers) depthwise += l.conv != nullptr && l.conv->options().groups > 1;
      EXPECT_EQ(depthwise, 3);
    }
    ++models;
  }
  EXPECT_EQ(models, 4);
}

// ---- Models built here ------------------------------------------------------------------------

onnx::TensorProto float_tensor(const std::string& name, std::vector<int64_t> dims, uint64_t seed) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto_DataType_FLOAT);
  int64_t n = 1;
  for (int64_t d : dims) {
    t.add_dims(d);
    n *= d;
  }
  Rng rng(seed);
  for (int64_t i = 0; i < n; ++i) t.add_float_data(rng.uniform(-1.0f, 1.0f));
  return t;
}

onnx::TensorProto int_tensor(const std::string& name, std::vector<int64_t> values) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto_DataType_INT64);
  t.add_dims(static_cast<int64_t>(values.size()));
  for (int64_t v : values) t.add_int64_data(v);
  return t;
}

onnx::NodeProto* add_node(onnx::GraphProto& g, const std::string& op, const std::string& name,
                          std::vector<std::string> inputs, std::vector<std::string> outputs) {
  onnx::NodeProto* n = g.add_node();
  n->set_op_type(op);
  n->set_name(name);
  for (const auto& i : inputs) n->add_input(i);
  for (const auto& o : outputs) n->add_output(o);
  return n;
}
void set_ints(onnx::NodeProto* n, const std::string& name, std::vector<int64_t> values) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}
void set_int(onnx::NodeProto* n, const std::string& name, int64_t value) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}
onnx::NodeProto* find_node(onnx::ModelProto& m, const std::string& name) {
  for (onnx::NodeProto& n : *m.mutable_graph()->mutable_node())
    if (n.name() == name) return &n;
  return nullptr;
}
onnx::TensorProto* find_initializer(onnx::ModelProto& m, const std::string& name) {
  for (onnx::TensorProto& t : *m.mutable_graph()->mutable_initializer())
    if (t.name() == name) return &t;
  return nullptr;
}

// x [N, 1, 8, 8] -> conv (4, 3x3, pad 1, bias) -> relu -> global average pool -> flatten -> gemm
// (3 classes, transB) -> y.
onnx::ModelProto tiny_model(int64_t opset = 13) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("bitmix test");
  onnx::OperatorSetIdProto* o = m.add_opset_import();
  o->set_domain("");
  o->set_version(opset);
  onnx::GraphProto& g = *m.mutable_graph();
  g.set_name("tiny");
  onnx::ValueInfoProto* in = g.add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto_DataType_FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("batch");
  for (int64_t d : {1, 8, 8}) tt->mutable_shape()->add_dim()->set_dim_value(d);
  g.add_output()->set_name("y");
  *g.add_initializer() = float_tensor("conv.weight", {4, 1, 3, 3}, 1);
  *g.add_initializer() = float_tensor("conv.bias", {4}, 2);
  *g.add_initializer() = float_tensor("fc.weight", {3, 4}, 3);
  *g.add_initializer() = float_tensor("fc.bias", {3}, 4);
  onnx::NodeProto* conv = add_node(g, "Conv", "conv", {"x", "conv.weight", "conv.bias"}, {"c"});
  set_ints(conv, "kernel_shape", {3, 3});
  set_ints(conv, "pads", {1, 1, 1, 1});
  set_ints(conv, "strides", {1, 1});
  add_node(g, "Relu", "relu", {"c"}, {"r"});
  add_node(g, "GlobalAveragePool", "gap", {"r"}, {"p"});
  add_node(g, "Flatten", "flatten", {"p"}, {"f"});
  onnx::NodeProto* gemm = add_node(g, "Gemm", "fc", {"f", "fc.weight", "fc.bias"}, {"y"});
  set_int(gemm, "transB", 1);
  return m;
}

OnnxImport import_model(const onnx::ModelProto& m) { return import_onnx_bytes(m.SerializeAsString(), "model.onnx"); }

Tensor logits(const onnx::ModelProto& m, const Tensor& x) { return import_model(m).model->forward(x); }

Tensor random_images() {
  Rng rng(9);
  Tensor x({2, 1, 8, 8});
  for (float& v : x.values()) v = rng.uniform(0.0f, 1.0f);
  return x;
}

void expect_same(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_FLOAT_EQ(a[i], b[i]) << i;
}

TEST(OnnxImport, ConstantSubgraphsAreFoldedAndMatMulAddIsALinearLayer) {
  const Tensor x = random_images();
  const onnx::ModelProto base = tiny_model();
  const Tensor want = logits(base, x);
  OnnxImport plain = import_model(base);
  EXPECT_EQ(plain.spec.graph->nodes.size(), 4u);  // the Flatten of [N, C] is a no-op
  EXPECT_EQ(plain.spec.graph->nodes[0].name, "conv");

  // The conv weight as Reshape(flat initializer, Concat(Shape-derived constants)).
  onnx::ModelProto folded = tiny_model();
  onnx::GraphProto& g = *folded.mutable_graph();
  onnx::TensorProto* w = find_initializer(folded, "conv.weight");
  w->set_name("flat");
  w->clear_dims();
  w->add_dims(36);
  *g.add_initializer() = int_tensor("head", {4});
  *g.add_initializer() = int_tensor("tail", {1, 3, 3});
  onnx::NodeProto cat;
  cat.set_op_type("Concat");
  cat.set_name("shape_cat");
  cat.add_input("head");
  cat.add_input("tail");
  cat.add_output("wshape");
  set_int(&cat, "axis", 0);
  onnx::NodeProto reshape;
  reshape.set_op_type("Reshape");
  reshape.set_name("wreshape");
  reshape.add_input("flat");
  reshape.add_input("wshape");
  reshape.add_output("conv.weight");
  // Prepend the two constant nodes.
  google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
  *nodes.Add() = cat;
  *nodes.Add() = reshape;
  for (const onnx::NodeProto& n : g.node()) *nodes.Add() = n;
  g.mutable_node()->Swap(&nodes);
  OnnxImport f = import_model(folded);
  EXPECT_EQ(f.spec.graph->nodes.size(), 4u);
  expect_same(f.model->forward(x), want);

  // Gemm(transB) == MatMul(f, W^T) + Add(bias).
  onnx::ModelProto mm = tiny_model();
  onnx::TensorProto* fw = find_initializer(mm, "fc.weight");
  onnx::TensorProto t = *fw;
  fw->clear_float_data();
  fw->clear_dims();
  fw->add_dims(4);
  fw->add_dims(3);
  for (int i = 0; i < 4; ++i)
    for (int o = 0; o < 3; ++o) fw->add_float_data(t.float_data(o * 4 + i));
  onnx::NodeProto* gemm = find_node(mm, "fc");
  gemm->set_op_type("MatMul");
  gemm->clear_attribute();
  gemm->mutable_input()->RemoveLast();
  gemm->set_output(0, "mm");
  add_node(*mm.mutable_graph(), "Add", "fc_bias", {"mm", "fc.bias"}, {"y"});
  OnnxImport m2 = import_model(mm);
  EXPECT_EQ(m2.spec.graph->nodes.back().op, nn::GraphOp::linear);
  EXPECT_TRUE(m2.spec.graph->nodes.back().bias);
  expect_same(m2.model->forward(x), want);

  // Identity and Dropout are removed; metadata properties give normalization and classes.
  onnx::ModelProto id = tiny_model();
  find_node(id, "relu")->set_output(0, "r0");
  add_node(*id.mutable_graph(), "Identity", "id", {"r0"}, {"r1"});
  add_node(*id.mutable_graph(), "Dropout", "drop", {"r1"}, {"r"});
  auto* p = id.add_metadata_props();
  p->set_key("bitmix.mean");
  p->set_value("0.5");
  p = id.add_metadata_props();
  p->set_key("bitmix.class_names");
  p->set_value("a,b,c");
  // Nodes after their readers in file order would be a cycle: keep a topological order.
  onnx::GraphProto& ig = *id.mutable_graph();
  google::protobuf::RepeatedPtrField<onnx::NodeProto> order;
  for (const char* name : {"conv", "relu", "id", "drop", "gap", "flatten", "fc"})
    for (const onnx::NodeProto& n : ig.node())
      if (n.name() == name) *order.Add() = n;
  ig.mutable_node()->Swap(&order);
  OnnxImport i2 = import_model(id);
  EXPECT_EQ(i2.spec.graph->nodes.size(), 4u);
  EXPECT_EQ(i2.normalization.mean, std::vector<float>{0.5f});
  EXPECT_EQ(i2.class_names, (std::vector<std::string>{"a", "b", "c"}));
  expect_same(i2.model->forward(x), want);
}

// ---- Refusals ---------------------------------------------------------------------------------

void expect_refused(const std::string& bytes, const std::string& fragment) {
  try {
    import_onnx_bytes(bytes, "model.onnx");
    ADD_FAILURE() << "imported; expected a FormatError with '" << fragment << "'";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("model.onnx: ", 0), 0u) << e.what();
  }
}
void expect_refused(const std::function<void(onnx::ModelProto&)>& edit, const std::string& fragment) {
  onnx::ModelProto m = tiny_model();
  edit(m);
  SCOPED_TRACE(fragment);
  expect_refused(m.SerializeAsString(), fragment);
}

TEST(OnnxImport, MalformedFilesAreRefused) {
  expect_refused(std::string(), "empty file");
  expect_refused(std::string("this is not a protobuf \xff\xff\xff\xff", 27), "not a valid ONNX protobuf");
  const std::string good = tiny_model().SerializeAsString();
  // Every truncation is refused (as corrupt protobuf or as an incomplete graph), never imported.
  int refused = 0;
  for (std::size_t len = 1; len < good.size(); len += 7) {
    try {
      import_onnx_bytes(good.substr(0, len), "model.onnx");
    } catch (const FormatError&) {
      ++refused;
      continue;
    }
    ADD_FAILURE() << "a file truncated to " << len << " of " << good.size() << " bytes was imported";
  }
  EXPECT_GT(refused, 0);
}

TEST(OnnxImport, UnsupportedContentIsRefusedNamingNodeOperatorAndAttribute) {
  expect_refused([](onnx::ModelProto& m) { find_node(m, "relu")->set_op_type("Sigmoid"); },
                 "node 'relu' (Sigmoid): operator 'Sigmoid' is not supported");
  expect_refused([](onnx::ModelProto& m) { set_int(find_node(m, "conv"), "foo", 1); },
                 "node 'conv' (Conv): attribute 'foo' is not supported");
  expect_refused([](onnx::ModelProto& m) { set_ints(find_node(m, "conv"), "dilations", {2, 2}); },
                 "node 'conv' (Conv): attribute 'dilations' = [2, 2]");
  expect_refused(
      [](onnx::ModelProto& m) {
        onnx::NodeProto* c = find_node(m, "conv");
        c->mutable_attribute(1)->set_ints(2, 0);  // pads [1, 1, 0, 1]
      },
      "node 'conv' (Conv): attribute 'pads' = [1, 1, 0, 1]: symmetric padding");
  expect_refused(
      [](onnx::ModelProto& m) {
        onnx::AttributeProto* a = find_node(m, "conv")->add_attribute();
        a->set_name("auto_pad");
        a->set_type(onnx::AttributeProto::STRING);
        a->set_s("SAME_UPPER");
      },
      "attribute 'auto_pad' = SAME_UPPER");
  expect_refused([](onnx::ModelProto& m) { set_int(find_node(m, "conv"), "group", 3); },
                 "node 'conv' (Conv): attribute 'group' = 3");
  expect_refused(
      [](onnx::ModelProto& m) {
        m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(2)->set_dim_param("h");
      },
      "graph input 'x' dimension 2 is 'h': a dynamic shape");
  expect_refused(
      [](onnx::ModelProto& m) {
        m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto_DataType_DOUBLE);
      },
      "graph input 'x' has data type DOUBLE");
  expect_refused([](onnx::ModelProto& m) { find_initializer(m, "conv.bias")->set_data_type(onnx::TensorProto_DataType_FLOAT16); },
                 "initializer 'conv.bias': data type FLOAT16 is not supported");
  expect_refused(
      [](onnx::ModelProto& m) {
        onnx::TensorProto* t = find_initializer(m, "conv.weight");
        t->set_data_location(onnx::TensorProto_DataLocation_EXTERNAL);
        auto* e = t->add_external_data();
        e->set_key("location");
        e->set_value("weights.bin");
      },
      "initializer 'conv.weight': its data is in an external file");
  expect_refused(
      [](onnx::ModelProto& m) {
        onnx::TensorProto* t = find_initializer(m, "fc.bias");
        t->clear_float_data();
        t->set_raw_data(std::string(8, '\0'));
      },
      "initializer 'fc.bias': 8 bytes of raw data for 3 elements");
  expect_refused([](onnx::ModelProto& m) { find_node(m, "relu")->set_input(0, "nowhere"); },
                 "node 'relu' (Relu): input 'nowhere' is not produced by an earlier node");
  expect_refused([](onnx::ModelProto& m) { find_node(m, "relu")->set_input(0, "p"); },  // reads a later node: a cycle
                 "(a dangling input, or nodes out of order: a cycle)");
  expect_refused([](onnx::ModelProto& m) { find_node(m, "gap")->set_output(0, "c"); }, "node 'gap' (GlobalAveragePool): output 'c' is written twice");
  expect_refused(
      [](onnx::ModelProto& m) {
        onnx::TensorProto* t = find_initializer(m, "fc.weight");
        t->set_dims(1, 5);
        for (int i = 0; i < 3; ++i) t->add_float_data(0.5f);
      },
      "node 'fc' (Gemm): weight [3, 5] for 4 input features");
  expect_refused([](onnx::ModelProto& m) { m.mutable_opset_import(0)->set_version(9); }, "opset 9: bitmix imports opsets 11 to 17");
  expect_refused([](onnx::ModelProto& m) { m.mutable_opset_import(0)->set_version(18); }, "opset 18");
  expect_refused(
      [](onnx::ModelProto& m) {
        onnx::NodeProto* r = find_node(m, "relu");
        r->set_op_type("Clip");
        r->add_input("lo");
        r->add_input("hi");
        onnx::TensorProto lo = float_tensor("lo", {}, 1), hi = float_tensor("hi", {}, 1);
        lo.set_float_data(0, 0.0f);
        hi.set_float_data(0, 1.0f);
        *m.mutable_graph()->add_initializer() = lo;
        *m.mutable_graph()->add_initializer() = hi;
      },
      "node 'relu' (Clip): Clip to [0, 1]");
  expect_refused(
      [](onnx::ModelProto& m) {
        onnx::NodeProto* f = find_node(m, "flatten");
        f->set_op_type("Reshape");
        f->add_input("shape");
        *m.mutable_graph()->add_initializer() = int_tensor("shape", {1, 2, 2});
      },
      "node 'flatten' (Reshape): reshape of [1, 4] to [1, 2, 2]");
  expect_refused([](onnx::ModelProto& m) { find_node(m, "fc")->set_domain("com.microsoft"); },
                 "node 'fc' (Gemm): operator domain 'com.microsoft'");
  expect_refused(
      [](onnx::ModelProto& m) {
        onnx::NodeProto* p = find_node(m, "gap");
        p->set_op_type("MaxPool");
        set_ints(p, "kernel_shape", {2, 2});
        set_int(p, "ceil_mode", 1);
      },
      "node 'gap' (MaxPool): attribute 'ceil_mode' = 1");
  expect_refused(
      [](onnx::ModelProto& m) {
        onnx::NodeProto* p = find_node(m, "gap");
        p->set_op_type("AveragePool");
        set_ints(p, "kernel_shape", {3, 3});
        set_ints(p, "pads", {1, 1, 1, 1});
      },
      "node 'gap' (AveragePool): attribute 'count_include_pad' = 0");
  expect_refused(
      [](onnx::ModelProto& m) {
        onnx::ValueInfoProto* in = m.mutable_graph()->add_input();
        *in = m.graph().input(0);
        in->set_name("x2");
      },
      "the graph has 2 inputs besides its initializers");
  expect_refused([](onnx::ModelProto& m) { find_node(m, "conv")->set_input(1, "x"); },
                 "node 'conv' (Conv): input 1 ('x', weight) must be a constant");
  expect_refused([](onnx::ModelProto& m) { m.mutable_graph()->mutable_output(0)->set_name("r"); },
                 "graph output 'r' has shape [1, 4, 8, 8]");
}

}  // namespace
}  // namespace bitmix::deploy
