// Model <-> .bmx: round trips, and files that lie (corrupt bytes, truncation, and well-formed
// containers whose model content is inconsistent) are rejected with a FormatError naming the
// file and the field, never read out of bounds (this suite runs under AddressSanitizer in CI).
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "bitmix/core/error.hpp"
#include "bitmix/runtime/model.hpp"
#include "bitmix/runtime/session.hpp"
#include "runtime/runtime_test_util.hpp"

namespace bitmix::runtime {
namespace {

using testing::make_test_model;

std::size_t op_index(const Model& m, const std::string& name) {
  for (std::size_t i = 0; i < m.ops().size(); ++i)
    if (m.ops()[i].name == name) return i;
  ADD_FAILURE() << "no op " << name;
  return 0;
}

std::string key(std::size_t op, const std::string& field) { return "op." + std::to_string(op) + "." + field; }

struct Contents {
  std::map<std::string, MetaValue> metadata;
  struct T {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<T> tensors;
};

// Re-serializes a valid model file after `edit` changed its contents: the container stays
// well-formed (checksums valid), so only the model reader can object.
std::vector<uint8_t> rewrite(const std::vector<uint8_t>& bytes, const std::function<void(Contents&)>& edit) {
  const BmxFile f = BmxFile::parse(bytes, "orig");
  Contents c;
  for (const auto& [k, v] : f.metadata()) c.metadata[k] = v;
  for (const TensorEntry& t : f.tensors())
    c.tensors.push_back({t.name, t.dtype, t.shape, std::vector<uint8_t>(t.bytes.begin(), t.bytes.end())});
  edit(c);
  BmxWriter w;
  for (const auto& [k, v] : c.metadata) w.set(k, v);
  for (const auto& t : c.tensors) w.add_tensor(t.name, t.dtype, t.shape, t.bytes);
  return w.serialize();
}

void expect_rejected(const std::vector<uint8_t>& bytes, const std::string& fragment) {
  try {
    Model::parse(bytes, "lying.bmx");
    ADD_FAILURE() << "accepted a model that should fail with: " << fragment;
  } catch (const FormatError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(fragment), std::string::npos) << what;
    EXPECT_NE(what.find("lying.bmx"), std::string::npos) << what;
  }
}

TEST(ModelFile, RoundTripKeepsEveryOpAndTheLogits) {
  const testing::TestModel tm = make_test_model(21);
  const std::vector<uint8_t> bytes = tm.model.serialize();
  const Model back = Model::parse(bytes, "mem");
  EXPECT_EQ(back.serialize(), bytes);  // nothing lost, nothing reordered
  EXPECT_EQ(back.info().name, "test-net");
  EXPECT_EQ(back.info().class_names, tm.model.info().class_names);
  EXPECT_EQ(back.info().mean, tm.model.info().mean);
  EXPECT_EQ(std::get<std::string>(back.info().extra.at("source")), "unit test");
  ASSERT_EQ(back.ops().size(), tm.model.ops().size());
  for (std::size_t i = 0; i < back.ops().size(); ++i) {
    const Op& a = tm.model.ops()[i];
    const Op& b = back.ops()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.kind, b.kind);
    EXPECT_EQ(a.inputs, b.inputs);
    EXPECT_EQ(a.notes.weight_scales, b.notes.weight_scales);
    if (a.kind == OpKind::conv2d || a.kind == OpKind::linear) {
      EXPECT_EQ(a.conv().weights.codes(), b.conv().weights.codes()) << a.name;
      EXPECT_EQ(a.conv().weights.spec(), b.conv().weights.spec()) << a.name;
    }
  }
  Rng rng(22);
  const Tensor images = testing::random_images(rng, {2, 3, 9, 10});
  Session s1(tm.model), s2(back);
  const Tensor l1 = s1.run(images), l2 = s2.run(images);
  EXPECT_TRUE(testing::same_floats(l1.data(), l2.data(), l1.numel()));
  EXPECT_EQ(back.stats().packed_weight_bytes, tm.model.stats().packed_weight_bytes);
}

TEST(ModelFile, SavesAtomicallyAndLoadsFromDisk) {
  const testing::TestModel tm = make_test_model(23);
  const auto dir = std::filesystem::temp_directory_path() / "bitmix_model_io_test";
  std::filesystem::remove_all(dir);
  tm.model.save(dir / "m.bmx");
  EXPECT_EQ(Model::load(dir / "m.bmx").serialize(), tm.model.serialize());
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 1);
  EXPECT_THROW(Model::load(dir / "absent.bmx"), IoError);
  std::filesystem::remove_all(dir);
}

TEST(ModelFile, EveryCorruptedByteOrTruncationIsAnError) {
  const std::vector<uint8_t> bytes = make_test_model(24).model.serialize();
  int accepted = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    std::vector<uint8_t> bad = bytes;
    bad[i] ^= 0x41;
    try {
      Model::parse(bad, "bad.bmx");
      ++accepted;  // only the zero padding between sections is unchecked
    } catch (const Error&) {
    }
  }
  EXPECT_LT(accepted, 64);
  for (std::size_t n = 0; n < bytes.size(); n += 7) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(Model::parse(cut, "cut.bmx"), FormatError) << n;
  }
}

TEST(ModelFile, InconsistentContentIsRejectedWithTheField) {
  const testing::TestModel tm = make_test_model(25);
  const Model& m = tm.model;
  const std::vector<uint8_t> bytes = m.serialize();
  const std::size_t conv1 = op_index(m, "b1.conv1"), conv2 = op_index(m, "b1.conv2"), stem_q = 0;
  const std::size_t add2 = op_index(m, "b2.add"), proj = op_index(m, "b3.proj");

  expect_rejected(rewrite(bytes, [](Contents& c) { c.metadata["model.format_version"] = int64_t{2}; }),
                  "model format version 2");
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(conv1, "weights.bits")] = int64_t{9}; }),
                  key(conv1, "weights.bits"));
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(conv1, "weights.bits")] = int64_t{1} << 33; }),
                  key(conv1, "weights.bits"));
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata.erase(key(conv2, "relu")); }), key(conv2, "relu"));
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(conv2, "relu")] = std::string("yes"); }),
                  key(conv2, "relu"));
  expect_rejected(
      rewrite(bytes, [&](Contents& c) { c.metadata[key(conv1, "inputs")] = std::vector<int64_t>{int64_t(conv1) + 1}; }),
      key(conv1, "inputs"));
  // A conv reading a real value.
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(conv1, "inputs")] = std::vector<int64_t>{1 + 1}; }),
                  "expected packed");
  // Padding beyond the input's border (the kernels would read outside the planes).
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(proj, "padding")] = std::vector<int64_t>{2, 2}; }),
                  "border");
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(stem_q, "code_range")] = std::vector<int64_t>{9, 3}; }),
                  "code range");
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(stem_q, "scale")] = -1.0; }), "scale");
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(stem_q, "scale")] = 0.1; }), "float32");
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(1, "kind")] = std::string("softmax"); }),
                  "op kind 'softmax'");
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(add2, "shortcut")] = std::string("identity"); }),
                  "identity shortcut");
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(add2, "inputs")] = std::vector<int64_t>{3}; }),
                  "expected 2");
  expect_rejected(rewrite(bytes, [&](Contents& c) { c.metadata[key(0, "surprise")] = int64_t{1}; }),
                  "unknown key 'op.0.surprise'");
  expect_rejected(rewrite(bytes,
                          [](Contents& c) {
                            c.tensors.push_back({"stray", DType::f32, {1}, std::vector<uint8_t>(4, 0)});
                          }),
                  "tensor 'stray'");
  expect_rejected(rewrite(bytes,
                          [&](Contents& c) {
                            c.metadata["model.op_count"] = static_cast<int64_t>(m.ops().size() + 1);
                          }),
                  key(m.ops().size(), "kind"));
  expect_rejected(rewrite(bytes,
                          [&](Contents& c) {
                            c.metadata["model.op_count"] = static_cast<int64_t>(m.ops().size() - 1);
                          }),
                  "unknown key");
  expect_rejected(rewrite(bytes, [](Contents& c) { c.metadata["model.class_names"] = std::vector<std::string>{"x"}; }),
                  "class names");
  expect_rejected(rewrite(bytes, [](Contents& c) { c.metadata["model.normalization.std"] = std::vector<double>{1.0}; }),
                  "normalization");
  expect_rejected(rewrite(bytes,
                          [](Contents& c) {
                            c.metadata["model.input_shape"] = std::vector<int64_t>{3, 9, int64_t{1} << 40};
                          }),
                  "model.input_shape");
  // Weights: a wrong word count, then set padding bits.
  expect_rejected(rewrite(bytes,
                          [&](Contents& c) {
                            c.metadata[key(conv1, "weights.shape")] = std::vector<int64_t>{9, 8, 3, 3};
                          }),
                  key(conv1, ""));
  expect_rejected(rewrite(bytes,
                          [&](Contents& c) {
                            for (auto& t : c.tensors)
                              if (t.name == key(conv1, "weights")) std::fill(t.bytes.begin(), t.bytes.end(), 0xFF);
                          }),
                  key(conv1, "weights"));
  // A NaN in a folded scale.
  expect_rejected(rewrite(bytes,
                          [&](Contents& c) {
                            for (auto& t : c.tensors)
                              if (t.name == key(conv2, "scale")) {
                                const float nan = std::numeric_limits<float>::quiet_NaN();
                                std::memcpy(t.bytes.data(), &nan, 4);
                              }
                          }),
                  "epilogue");
  // The logits must come last and be a vector.
  expect_rejected(rewrite(bytes,
                          [&](Contents& c) {
                            c.metadata["model.op_count"] = static_cast<int64_t>(m.ops().size() - 1);
                            const std::string last = "op." + std::to_string(m.ops().size() - 1) + ".";
                            for (auto it = c.metadata.begin(); it != c.metadata.end();)
                              it = it->first.rfind(last, 0) == 0 ? c.metadata.erase(it) : std::next(it);
                            std::erase_if(c.tensors, [&](const auto& t) { return t.name.rfind(last, 0) == 0; });
                          }),
                  "logits");
  // Provenance under info.* is free-form.
  const Model ok = Model::parse(rewrite(bytes, [](Contents& c) { c.metadata["info.anything"] = 1.5; }), "ok.bmx");
  EXPECT_EQ(std::get<double>(ok.info().extra.at("anything")), 1.5);
}

TEST(ModelBuilder, RefusesInconsistentOpsNamingThem) {
  ModelInfo info;
  info.name = "m";
  info.input_shape = {2, 4, 4};
  ModelBuilder b(info);
  QuantizeParams q;
  q.quant = kernels::ActivationQuant{2, 0.5f, 0, true};
  q.border = 0;
  const int32_t x = b.quantize("q", b.input(), q);
  ConvParams c;
  c.weights = kernels::PackedWeights::pack(std::vector<int32_t>(3 * 2 * 9, 1),
                                           {3, 2, 3, 3, 2, kernels::WeightEncoding::twos_complement, false});
  c.epilogue = kernels::Epilogue::float_output(std::vector<float>(3, 1.0f), std::vector<float>(3, 0.0f), false);
  c.conv = kernels::Conv2dParams{1, 1, 1, 1};
  try {
    b.conv2d("needs-border", x, c);
    FAIL();
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("needs-border"), std::string::npos) << e.what();
  }
  c.conv = kernels::Conv2dParams{};
  const int32_t y = b.conv2d("conv", x, c);
  EXPECT_THROW(b.conv2d("conv", x, c), ArgumentError);        // duplicate name
  QuantizeParams qn = q;
  qn.normalize = true;
  EXPECT_THROW(b.quantize("qn", b.input(), qn), ArgumentError);  // the model has no normalization
  EXPECT_THROW(b.add("add", y, b.input(), AddParams{}), ShapeError);
  EXPECT_THROW(b.global_avg_pool("pool", x), ArgumentError);  // packed input
  EXPECT_THROW(b.finish(y), ShapeError);                       // [3, 2, 2] is not logits
  ModelInfo bad = info;
  bad.mean = {0.5f};
  bad.stddev = {0.5f};
  EXPECT_THROW(ModelBuilder{bad}, ArgumentError);  // one mean for two channels
}

TEST(ModelBuilder, RefusesAccumulatorsThatCouldOverflow) {
  ModelInfo info;
  info.name = "wide";
  info.input_shape = {16384, 1, 1};
  ModelBuilder b(info);
  QuantizeParams q;
  q.quant = kernels::ActivationQuant{8, 1.0f, 0, true};
  const int32_t x = b.quantize("q", b.input(), q);
  ConvParams c;
  c.weights = kernels::PackedWeights::pack(std::vector<int32_t>(16384, 1),
                                           {1, 16384, 1, 1, 8, kernels::WeightEncoding::twos_complement, false});
  c.epilogue = kernels::Epilogue::float_output({1.0f}, {0.0f}, false);
  try {
    b.linear("fc", x, c);
    FAIL();
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("overflow"), std::string::npos) << e.what();
  }
}

TEST(Model, StatsCountWeightsAndBitops) {
  const testing::TestModel tm = make_test_model(26);
  const ModelStats s = tm.model.stats();
  int64_t weights = 0, macs = 0, bitops = 0;
  for (const Op& op : tm.model.ops()) {
    if (op.kind != OpKind::conv2d && op.kind != OpKind::linear) continue;
    const kernels::WeightSpec& w = op.conv().weights.spec();
    const Shape& out = tm.model.values()[static_cast<std::size_t>(op.output)].shape;
    const int64_t pixels = out.size() == 3 ? out[1] * out[2] : 1;
    const int64_t m = pixels * w.out_channels * (w.depthwise ? 1 : w.in_channels) * w.kernel_h * w.kernel_w;
    weights += static_cast<int64_t>(tm.codes.at(op.name).size());
    macs += m;
    bitops += m * w.bits * tm.model.values()[static_cast<std::size_t>(op.inputs[0])].quant.bits;
  }
  EXPECT_EQ(s.weight_count, weights);
  EXPECT_EQ(s.macs, macs);
  EXPECT_EQ(s.bitops, bitops);
  EXPECT_EQ(s.float_parameter_bytes, 4 * weights + 4 * (8 + 8 + 8 + 16 + 16 + 16 + 16 + 16 + 16 + 5));
  EXPECT_LT(s.packed_weight_bytes, s.float_parameter_bytes);
  EXPECT_FALSE(describe(tm.model, tm.model.ops()[1]).empty());
}

}  // namespace
}  // namespace bitmix::runtime
