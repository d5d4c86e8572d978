// Graph models: a graph written as the zoo's ResNet computes the zoo's logits; gradients of a
// branchy graph (fan-out, concat, add, ReLU6, both poolings) against finite differences; the
// spec's JSON round trip through a checkpoint; every refusal of an inconsistent graph.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/graph.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/models.hpp"
#include "nn/gradcheck.hpp"

namespace bitmix::nn {
namespace {

using testing::expect_gradient;
using testing::GradCheckOptions;
using testing::random_tensor;

GraphNode node(std::string name, GraphOp op, std::vector<std::string> inputs, std::string output) {
  GraphNode n;
  n.name = std::move(name);
  n.op = op;
  n.inputs = std::move(inputs);
  n.output = std::move(output);
  return n;
}
GraphNode conv(std::string name, std::string in, std::string out, int64_t cin, int64_t cout, int64_t k, int64_t s,
               int64_t p, int64_t groups = 1, bool bias = false) {
  GraphNode n = node(std::move(name), GraphOp::conv, {std::move(in)}, std::move(out));
  n.conv = Conv2dOptions::square(cin, cout, k, s, p, groups, bias);
  return n;
}
GraphNode bn(std::string name, std::string in, std::string out, int64_t c, bool relu) {
  GraphNode n = node(std::move(name), GraphOp::batch_norm, {std::move(in)}, std::move(out));
  n.channels = c;
  n.relu = relu;
  return n;
}
GraphNode linear(std::string name, std::string in, std::string out, int64_t fin, int64_t fout) {
  GraphNode n = node(std::move(name), GraphOp::linear, {std::move(in)}, std::move(out));
  n.in_features = fin;
  n.out_features = fout;
  return n;
}

// ResNet-8, option B, width 4, as a graph whose node names are the zoo's with '_' for '.'.
GraphSpec resnet8_graph(int64_t in_channels, int64_t classes) {
  GraphSpec g;
  g.nodes.push_back(conv("conv1", "input", "c1", in_channels, 4, 3, 1, 1));
  g.nodes.push_back(bn("bn1", "c1", "x0", 4, true));
  std::string x = "x0";
  int64_t c = 4;
  for (int stage = 0; stage < 3; ++stage) {
    const int64_t out = int64_t{4} << stage, stride = stage > 0 ? 2 : 1;
    const std::string p = fmt::format("layer{}_0_", stage + 1);
    g.nodes.push_back(conv(p + "conv1", x, p + "a", c, out, 3, stride, 1));
    g.nodes.push_back(bn(p + "bn1", p + "a", p + "b", out, true));
    g.nodes.push_back(conv(p + "conv2", p + "b", p + "c", out, out, 3, 1, 1));
    g.nodes.push_back(bn(p + "bn2", p + "c", p + "d", out, false));
    std::string shortcut = x;
    if (stride != 1 || c != out) {
      g.nodes.push_back(conv(p + "shortcut_0", x, p + "s", c, out, 1, stride, 0));
      g.nodes.push_back(bn(p + "shortcut_1", p + "s", p + "t", out, false));
      shortcut = p + "t";
    }
    g.nodes.push_back(node(p + "add", GraphOp::add, {p + "d", shortcut}, p + "sum"));
    g.nodes.push_back(node(p + "relu", GraphOp::relu, {p + "sum"}, p + "out"));
    x = p + "out";
    c = out;
  }
  g.nodes.push_back(node("avgpool", GraphOp::global_avg_pool, {x}, "pooled"));
  g.nodes.push_back(linear("fc", "pooled", "logits", c, classes));
  g.output = "logits";
  return g;
}

std::string dotted(std::string name) {
  // "layer1_0_conv1.weight" -> "layer1.0.conv1.weight" (the zoo's names)
  for (const char* stage : {"layer1_0_", "layer2_0_", "layer3_0_"})
    if (name.rfind(stage, 0) == 0) name = std::string(stage).substr(0, 6) + "." + "0." + name.substr(9);
  if (auto pos = name.find("shortcut_"); pos != std::string::npos) name[pos + 8] = '.';
  return name;
}

TEST(Graph, ResNetWrittenAsAGraphComputesTheZoosLogits) {
  ModelSpec zoo;
  zoo.arch = "resnet8";
  zoo.width = 4;
  zoo.image_height = zoo.image_width = 8;
  zoo.num_classes = 5;
  zoo.shortcut = ShortcutOption::B;
  zoo.seed = 7;
  auto reference = make_model(zoo);
  ModelSpec spec = zoo;
  spec.arch = "graph";
  spec.graph = resnet8_graph(3, 5);
  spec.seed = 99;  // other initial weights: all of them are copied below
  auto graph = make_model(spec);
  std::vector<NamedParameter> gp = graph->named_parameters();
  std::vector<NamedBuffer> gb = graph->named_buffers();
  ASSERT_EQ(gp.size(), reference->named_parameters().size());
  Rng rng(3);
  for (NamedParameter& p : gp) {
    Module* m = reference->find(dotted(p.name.substr(0, p.name.rfind('.'))));
    ASSERT_NE(m, nullptr) << p.name;
    for (Parameter* q : m->own_parameters())
      if (q->name == p.name.substr(p.name.rfind('.') + 1)) {
        for (float& v : q->value.values()) v = rng.uniform(-0.5f, 0.5f);  // non-trivial BN affine maps too
        p.parameter->value = q->value;
      }
  }
  for (NamedBuffer& b : gb) {
    Module* m = reference->find(dotted(b.name.substr(0, b.name.rfind('.'))));
    ASSERT_NE(m, nullptr) << b.name;
    for (Buffer* q : m->own_buffers())
      if (q->name == b.name.substr(b.name.rfind('.') + 1)) {
        for (float& v : q->value.values()) v = q->name == "running_var" ? rng.uniform(0.5f, 2.0f) : rng.uniform(-0.2f, 0.2f);
        b.buffer->value = q->value;
      }
  }
  // The same quantizable layers in the same order (what BitConfigs and the search walk).
  const auto zl = reference->quantizable_layers({3, 8, 8});
  const auto gl = graph->quantizable_layers({3, 8, 8});
  ASSERT_EQ(zl.size(), gl.size());
  for (std::size_t i = 0; i < zl.size(); ++i) {
    EXPECT_EQ(dotted(gl[i].name), zl[i].name);
    EXPECT_EQ(gl[i].macs_per_image, zl[i].macs_per_image);
  }
  for (bool training : {false, true}) {
    reference->train(training);
    graph->train(training);
    const Tensor x = random_tensor({3, 3, 8, 8}, rng);
    const Tensor want = reference->forward(x);
    const Tensor& got = graph->forward(x);
    ASSERT_EQ(got.shape(), want.shape());
    for (int64_t i = 0; i < want.numel(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-5f * (1.0f + std::abs(want[i]))) << (training ? "train " : "eval ") << i;
  }
}

// Fan-out (the stem output feeds three nodes), a depthwise conv, concat, add, ReLU6, max and
// average pooling, flatten and a linear head.
GraphSpec branchy_graph() {
  GraphSpec g;
  g.nodes.push_back(conv("stem", "input", "s0", 2, 4, 3, 1, 1, 1, true));
  g.nodes.push_back(bn("stem_bn", "s0", "s", 4, false));
  g.nodes.push_back(node("stem_relu6", GraphOp::relu6, {"s"}, "r"));
  g.nodes.push_back(conv("dw", "r", "d", 4, 4, 3, 1, 1, 4));
  g.nodes.push_back(conv("pw", "r", "p", 4, 2, 1, 1, 0));
  g.nodes.push_back(node("cat", GraphOp::concat, {"d", "p", "r"}, "cat"));  // 4 + 2 + 4 channels
  g.nodes.push_back(conv("mix", "cat", "m", 10, 4, 1, 1, 0, 1, true));
  g.nodes.push_back(node("res", GraphOp::add, {"m", "r"}, "sum"));
  g.nodes.push_back(node("relu", GraphOp::relu, {"sum"}, "a"));
  GraphNode mp = node("maxpool", GraphOp::max_pool, {"a"}, "mp");
  mp.pool = Pool2dOptions::square(3, 2, 1);
  g.nodes.push_back(mp);
  GraphNode ap = node("avgpool", GraphOp::avg_pool, {"mp"}, "ap");
  ap.pool = Pool2dOptions::square(2, 2, 0);
  g.nodes.push_back(ap);
  g.nodes.push_back(node("flatten", GraphOp::flatten, {"ap"}, "f"));
  g.nodes.push_back(linear("fc", "f", "logits", 4 * 2 * 2, 3));
  g.output = "logits";
  return g;
}

TEST(Graph, BranchyGraphGradientsMatchFiniteDifferences) {
  ModelSpec spec;
  spec.arch = "graph";
  spec.in_channels = 2;
  spec.image_height = spec.image_width = 8;
  spec.num_classes = 3;
  spec.graph = branchy_graph();
  spec.seed = 5;
  auto model = make_model(spec);
  model->eval();  // running statistics: a smooth map away from the ReLU kinks
  Rng rng(6);
  Tensor x = random_tensor({2, 2, 8, 8}, rng);
  const std::vector<int> labels = {2, 0};
  Tensor grad;
  model->zero_grad();
  softmax_cross_entropy(model->forward(x), labels, 0.0f, &grad);
  const Tensor input_grad = model->backward(grad);
  auto loss = [&] { return softmax_cross_entropy(model->forward(x), labels, 0.0f, nullptr).loss; };
  GradCheckOptions fd;
  fd.eps = 1e-3f;
  fd.rtol = 2e-2;
  fd.atol = 2e-3;
  fd.max_elements = 20;
  for (const NamedParameter& p : model->named_parameters()) {
    const Tensor analytic = p.parameter->grad;
    expect_gradient(p.name, p.parameter->value, analytic, loss, fd);
  }
  expect_gradient("input", x, input_grad, loss, fd);
}

TEST(Graph, SpecRoundTripsThroughACheckpoint) {
  ModelSpec spec;
  spec.arch = "graph";
  spec.in_channels = 2;
  spec.image_height = spec.image_width = 8;
  spec.num_classes = 3;
  spec.graph = branchy_graph();
  spec.graph->nodes[1].eps = 1e-3f;
  spec.seed = 11;
  auto model = make_model(spec);
  model->eval();
  Checkpoint ck;
  add_model_state(ck, *model);
  ck.metadata = model_spec_to_json(spec);
  const Checkpoint back = parse_checkpoint(serialize_checkpoint(ck), "memory");
  const ModelSpec read = model_spec_from_json(back.metadata);
  ASSERT_TRUE(read.graph.has_value());
  EXPECT_EQ(graph_spec_to_json(*read.graph), graph_spec_to_json(*spec.graph));
  auto rebuilt = make_model(read);
  load_model_state(*rebuilt, back);
  rebuilt->eval();
  Rng rng(2);
  const Tensor x = random_tensor({2, 2, 8, 8}, rng);
  const Tensor want = model->forward(x);
  const Tensor& got = rebuilt->forward(x);
  for (int64_t i = 0; i < want.numel(); ++i) EXPECT_EQ(got[i], want[i]);
}

void expect_refused(GraphSpec g, const std::string& fragment) {
  try {
    g.validate();
    ADD_FAILURE() << "accepted; expected an error with '" << fragment << "'";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
  // The JSON reader refuses the same graph as a FormatError.
  EXPECT_THROW(graph_spec_from_json(graph_spec_to_json(g)), FormatError);
}

TEST(Graph, InconsistentGraphsAreRefusedNamingTheNode) {
  GraphSpec g = branchy_graph();
  g.nodes[3].inputs = {"nowhere"};
  expect_refused(g, "graph node 'dw' (conv): input tensor 'nowhere'");
  g = branchy_graph();
  g.nodes[3].inputs = {"m"};  // written later: a cycle in node order
  expect_refused(g, "graph node 'dw' (conv): input tensor 'm' is not");
  g = branchy_graph();
  g.nodes[4].output = "d";
  expect_refused(g, "graph node 'pw' (conv): tensor 'd' is already written by node 'dw'");
  g = branchy_graph();
  g.nodes[4].name = "dw";
  expect_refused(g, "graph node 'dw' (conv): the name is used by two nodes");
  g = branchy_graph();
  g.nodes[4].name = "a.b";
  expect_refused(g, "contain no '.'");
  g = branchy_graph();
  g.nodes[7].inputs = {"m"};
  expect_refused(g, "graph node 'res' (add): 1 inputs, expected 2");
  g = branchy_graph();
  g.nodes[3].conv.groups = 3;
  expect_refused(g, "dw");
  g = branchy_graph();
  g.output = "missing";
  expect_refused(g, "output tensor 'missing'");

  // Shapes are checked when the model is built for an image: the add of 4 and 2 channels.
  g = branchy_graph();
  g.nodes[7].inputs = {"m", "p"};
  Rng rng(1);
  try {
    GraphModel model(g, {2, 8, 8}, rng);
    ADD_FAILURE() << "shape mismatch accepted";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("res: adds 'm' [1, 4, 8, 8] and 'p' [1, 2, 8, 8]"), std::string::npos)
        << e.what();
  }
  // Unknown fields and ops in the JSON form.
  const std::string good = graph_spec_to_json(branchy_graph());
  std::string bad = good;
  bad.replace(bad.find("\"groups\""), 8, "\"grupos\"");
  EXPECT_THROW(graph_spec_from_json(bad), FormatError);
  bad = good;
  bad.replace(bad.find("\"relu6\""), 7, "\"gelu\"");
  EXPECT_THROW(graph_spec_from_json(bad), FormatError);
  ModelSpec spec;
  spec.arch = "resnet20";
  spec.graph = branchy_graph();
  EXPECT_THROW(model_spec_from_json(model_spec_to_json(spec)), FormatError);  // a zoo arch with a graph
}

}  // namespace
}  // namespace bitmix::nn
