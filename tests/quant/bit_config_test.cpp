// BitConfig: building, round trips through JSON and files, validation against a model, and
// malformed files, each rejected with a message naming the file and the entry at fault.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/quant/bit_config.hpp"

namespace bitmix::quant {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kLayers = {"conv1", "layer1.0.conv1", "layer1.0.conv2", "fc"};

// A valid file; tests break one thing at a time.
std::string valid_json(const std::string& layer1 = R"("w_bits": 4, "a_bits": 4, "w_quant": "lsq", "a_quant": "lsq")") {
  return R"({
  "format": "bitmix-bitconfig", "version": 1, "model": "tiny",
  "policy": {"first_layer_bits": 8, "last_layer_bits": 8},
  "layers": [
    {"name": "conv1", "w_bits": 8, "a_bits": 8, "w_quant": "lsq", "a_quant": "lsq", "macs": 1000, "params": 10},
    {"name": "layer1.0.conv1", )" + layer1 + R"(, "macs": 2000, "params": 20},
    {"name": "layer1.0.conv2", "w_bits": 2, "a_bits": 3, "w_quant": "pot", "a_quant": "pact", "macs": 3000, "params": 30},
    {"name": "fc", "w_bits": 8, "a_bits": 8, "w_quant": "uniform", "a_quant": "uniform", "macs": 40, "params": 40}
  ]
})";
}

// Expects FormatError whose message contains every fragment.
void expect_format_error(const std::string& text, std::initializer_list<std::string> fragments) {
  try {
    BitConfig::parse(text, "bits.json");
    ADD_FAILURE() << "expected FormatError for:\n" << text;
  } catch (const FormatError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("bits.json"), std::string::npos) << message;
    for (const std::string& f : fragments) EXPECT_NE(message.find(f), std::string::npos) << message;
  }
}

std::string replace(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

TEST(BitConfig, UniformAppliesTheFirstLastPolicy) {
  const BitConfig c = BitConfig::uniform("tiny", kLayers, 4, 3, QuantizerKind::lsq, QuantizerKind::pact);
  ASSERT_EQ(c.layers.size(), 4u);
  EXPECT_EQ(c.layers[0].w_bits, 8);
  EXPECT_EQ(c.layers[0].a_bits, 8);
  EXPECT_EQ(c.layers[1].w_bits, 4);
  EXPECT_EQ(c.layers[2].a_bits, 3);
  EXPECT_EQ(c.layers[3].w_bits, 8);
  EXPECT_EQ(c.at("layer1.0.conv1").a_quant, QuantizerKind::pact);
  EXPECT_NE(c.summary().find("first and last layers at 8 bits"), std::string::npos) << c.summary();
  // Overridden: nothing pinned.
  const BitConfig free = BitConfig::uniform("tiny", kLayers, 2, 2, QuantizerKind::lsq, QuantizerKind::lsq,
                                            BitPolicy::none());
  EXPECT_EQ(free.layers[0].w_bits, 2);
  EXPECT_NE(free.summary().find("no layer pinned"), std::string::npos) << free.summary();
  // A kind that cannot take the pinned bits is reported, naming the layer.
  try {
    BitConfig::uniform("tiny", kLayers, 1, 4, QuantizerKind::binary, QuantizerKind::lsq);
    ADD_FAILURE() << "expected ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("\"conv1\""), std::string::npos) << e.what();
  }
}

TEST(BitConfig, JsonRoundTripKeepsEveryField) {
  BitConfig c = BitConfig::parse(valid_json(), "bits.json");
  c.notes = "EBS, lambda 0.1";
  c.totals = c.compute_totals();
  c.layers[2].w_granularity = Granularity::per_channel;
  const BitConfig back = BitConfig::parse(c.to_json(), "round trip");
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_EQ(back.model, "tiny");
  EXPECT_EQ(back.notes, c.notes);
  ASSERT_TRUE(back.totals.has_value());
  EXPECT_EQ(back.totals->bitops, c.totals->bitops);
  EXPECT_EQ(back.layers[2].w_granularity, Granularity::per_channel);
  EXPECT_EQ(back.layers[2].w_quant, QuantizerKind::pot);
  EXPECT_EQ(back.layers[1].macs, std::optional<int64_t>(2000));
  // A null pin round-trips as "not pinned".
  c.policy.last_layer_bits = std::nullopt;
  EXPECT_FALSE(BitConfig::parse(c.to_json()).policy.last_layer_bits.has_value());
}

TEST(BitConfig, TotalsFromAnnotations) {
  const BitConfig c = BitConfig::parse(valid_json());
  const BitTotals t = c.compute_totals();
  EXPECT_EQ(t.macs, std::optional<int64_t>(6040));
  EXPECT_EQ(t.params, std::optional<int64_t>(100));
  EXPECT_EQ(t.bitops, std::optional<int64_t>(1000 * 64 + 2000 * 16 + 3000 * 6 + 40 * 64));
  // 2-bit power-of-two weights need 2 storage bits; the others their nominal bits.
  EXPECT_EQ(t.weight_bits, std::optional<int64_t>(10 * 8 + 20 * 4 + 30 * 2 + 40 * 8));
  BitConfig partial = c;
  partial.layers[1].macs.reset();
  EXPECT_FALSE(partial.compute_totals().bitops.has_value());
  EXPECT_TRUE(partial.compute_totals().weight_bits.has_value());
}

TEST(BitConfig, SaveAndLoadFiles) {
  const fs::path dir = fs::temp_directory_path() / fs::path("bitmix-quant-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const fs::path file = dir / "nested" / "bits.json";
  const BitConfig c = BitConfig::uniform("tiny", kLayers, 3, 3, QuantizerKind::sawb, QuantizerKind::pact);
  c.save(file);
  const BitConfig back = BitConfig::load(file);
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_THROW(BitConfig::load(dir / "missing.json"), IoError);
  // An invalid config is not written at all.
  BitConfig bad = c;
  bad.layers[1].w_bits = 9;
  const fs::path bad_file = dir / "bad.json";
  EXPECT_THROW(bad.save(bad_file), ArgumentError);
  EXPECT_FALSE(fs::exists(bad_file));
  // A file that is cut short is a FormatError naming it.
  const std::string text = read_file_text(file);
  write_file_atomic(bad_file, text.substr(0, text.size() / 2));
  try {
    BitConfig::load(bad_file);
    ADD_FAILURE() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(BitConfig, MalformedFilesNameTheEntry) {
  expect_format_error("{", {"not valid JSON"});
  expect_format_error("[1, 2]", {"expected a JSON object"});
  expect_format_error(replace(valid_json(), "bitmix-bitconfig", "bitmix-config"), {"\"bitmix-config\"", "expected"});
  expect_format_error(replace(valid_json(), "\"version\": 1", "\"version\": 2"), {"version 2", "version 1"});
  expect_format_error(replace(valid_json(), "\"model\": \"tiny\",", ""), {"missing \"model\""});
  expect_format_error(replace(valid_json(), "\"model\": \"tiny\"", "\"model\": 7"), {"\"model\"", "string"});
  expect_format_error(replace(valid_json(), "\"format\"", "\"comment\": \"x\", \"format\""), {"unknown key \"comment\""});
  // Layer entries.
  expect_format_error(valid_json(R"("w_bits": 9, "a_bits": 4, "w_quant": "lsq", "a_quant": "lsq")"),
                      {"layers[1] \"layer1.0.conv1\"", "w_bits = 9", "1 to 8"});
  expect_format_error(valid_json(R"("w_bits": 0, "a_bits": 4, "w_quant": "lsq", "a_quant": "lsq")"),
                      {"layers[1]", "\"w_bits\" = 0"});
  expect_format_error(valid_json(R"("w_bits": 4.0, "a_bits": 4, "w_quant": "lsq", "a_quant": "lsq")"),
                      {"layers[1]", "w_bits", "integer"});
  expect_format_error(valid_json(R"("w_bits": "4", "a_bits": 4, "w_quant": "lsq", "a_quant": "lsq")"),
                      {"layers[1]", "w_bits", "integer"});
  expect_format_error(valid_json(R"("w_bits": true, "a_bits": 4, "w_quant": "lsq", "a_quant": "lsq")"),
                      {"layers[1]", "w_bits"});
  expect_format_error(valid_json(R"("w_bits": 4, "a_bits": 18446744073709551615, "w_quant": "lsq", "a_quant": "lsq")"),
                      {"layers[1]", "a_bits"});
  expect_format_error(valid_json(R"("w_bits": 4, "a_bits": 4, "w_quant": "lsqq", "a_quant": "lsq")"),
                      {"layers[1] \"layer1.0.conv1\"", "'lsqq'", "dorefa"});
  expect_format_error(valid_json(R"("w_bits": 4, "a_bits": 4, "w_quant": "pact", "a_quant": "lsq")"),
                      {"layers[1]", "w_quant = \"pact\"", "weights"});
  expect_format_error(valid_json(R"("w_bits": 4, "a_bits": 4, "w_quant": "lsq", "a_quant": "sawb")"),
                      {"layers[1]", "a_quant = \"sawb\"", "weights only"});
  expect_format_error(valid_json(R"("w_bits": 8, "a_bits": 4, "w_quant": "float", "a_quant": "lsq")"),
                      {"layers[1]", "float", "32"});
  expect_format_error(valid_json(R"("w_bits": 32, "a_bits": 4, "w_quant": "lsq", "a_quant": "lsq")"),
                      {"layers[1]", "bits = 32"});
  expect_format_error(valid_json(R"("w_bit": 4, "w_bits": 4, "a_bits": 4, "w_quant": "lsq", "a_quant": "lsq")"),
                      {"layers[1]", "unknown key \"w_bit\""});
  expect_format_error(valid_json(R"("a_bits": 4, "w_quant": "lsq", "a_quant": "lsq")"),
                      {"layers[1]", "missing \"w_bits\""});
  expect_format_error(valid_json(R"("w_bits": 4, "a_bits": 4, "w_quant": "lsq", "a_quant": "lsq", "w_granularity": "rows")"),
                      {"layers[1]", "'rows'"});
  expect_format_error(replace(valid_json(), "\"macs\": 2000", "\"macs\": -5"), {"layers[1]", "\"macs\" = -5"});
  expect_format_error(replace(valid_json(), "\"layer1.0.conv2\"", "\"layer1.0.conv1\""), {"layers[2]", "duplicate"});
  expect_format_error(replace(valid_json(), "\"layer1.0.conv2\"", "\"\""), {"layers[2]", "empty layer name"});
  expect_format_error(replace(valid_json(), "{\"name\": \"fc\"", "[], {\"name\": \"fc\""), {"layers[3]", "object"});
  // Whole-file structure and policy.
  expect_format_error(R"({"format": "bitmix-bitconfig", "version": 1, "model": "m", "layers": []})", {"no layers"});
  expect_format_error(R"({"format": "bitmix-bitconfig", "version": 1, "model": "m", "layers": {}})", {"array"});
  expect_format_error(replace(valid_json(), "\"first_layer_bits\": 8", "\"first_layer_bits\": 4"),
                      {"layers[0] \"conv1\"", "pins the first layer at 4 bits"});
  expect_format_error(replace(valid_json(), "\"last_layer_bits\": 8", "\"last_layer_bits\": 9"),
                      {"policy", "last_layer_bits"});
  expect_format_error(replace(valid_json(), "\"policy\": {", "\"policy\": {\"middle\": 3, "), {"unknown key \"middle\""});
  expect_format_error(replace(valid_json(), "\n}", ", \"totals\": {\"macs\": 1.5}\n}"), {"totals", "macs"});
  // Strict JSON: a key written twice (last one would silently win) and a number beyond a double.
  expect_format_error(replace(valid_json(), "\"model\": \"tiny\",", "\"model\": \"tiny\", \"model\": \"big\","),
                      {"key \"model\" appears twice", "at /"});
  expect_format_error(valid_json(R"("w_bits": 4, "a_bits": 4, "a_bits": 2, "w_quant": "lsq", "a_quant": "lsq")"),
                      {"key \"a_bits\" appears twice", "/layers/1"});
  expect_format_error(replace(valid_json(), "\"macs\": 2000", "\"macs\": 1e400"), {"number overflow", "1e400"});
  // Valid variants still parse: no policy (nothing pinned), null pins, float layers.
  EXPECT_NO_THROW(BitConfig::parse(replace(valid_json(), "\"policy\": {\"first_layer_bits\": 8, \"last_layer_bits\": 8},", "")));
  EXPECT_NO_THROW(BitConfig::parse(replace(valid_json(), "\"last_layer_bits\": 8", "\"last_layer_bits\": null")));
  EXPECT_NO_THROW(BitConfig::parse(valid_json(R"("w_bits": 32, "a_bits": 32, "w_quant": "float", "a_quant": "float")")));
}

TEST(BitConfig, ValidatedAgainstTheModelsLayers) {
  const BitConfig c = BitConfig::parse(valid_json());
  EXPECT_NO_THROW(c.validate_for_model(kLayers));
  const auto expect_argument_error = [&](const std::vector<std::string>& model, const std::string& fragment) {
    try {
      c.validate_for_model(model);
      ADD_FAILURE() << "expected ArgumentError";
    } catch (const ArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_argument_error({"conv1", "layer1.0.conv1", "fc"}, "\"layer1.0.conv2\" is not a layer of the model");
  expect_argument_error({"conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "fc"},
                        "no entry for the model's layer \"layer1.0.conv3\"");
  expect_argument_error({"conv1", "layer1.0.conv2", "layer1.0.conv1", "fc"}, "model's order");
  EXPECT_THROW(c.at("layer9"), ArgumentError);
  EXPECT_EQ(c.find("layer9"), nullptr);
  EXPECT_EQ(c.find("fc")->w_quant, QuantizerKind::uniform);
}

TEST(BitConfig, LayerSpecsBuildQuantizers) {
  LayerBits layer;
  layer.w_quant = QuantizerKind::sawb;
  layer.w_bits = 2;
  layer.a_quant = QuantizerKind::pact;
  layer.a_bits = 3;
  layer.w_granularity = Granularity::per_channel;
  const Quantizer w(layer.weight_spec(16));
  EXPECT_EQ(w.groups(), 16);
  EXPECT_EQ(w.kind(), QuantizerKind::sawb);
  const Quantizer a(layer.activation_spec());
  EXPECT_EQ(a.role(), Role::activation);
  EXPECT_EQ(a.bits(), 3);
  layer.w_granularity = Granularity::per_tensor;
  EXPECT_EQ(layer.weight_spec(16).groups(), 1);
}

}  // namespace
}  // namespace bitmix::quant
