#include "core/strict_json.hpp"

#include <gtest/gtest.h>

#include <string>

#include "bitmix/core/error.hpp"

namespace bitmix::detail {
namespace {

// The message of the FormatError that parsing `text` as "bits.json" throws ("" if none).
template <class Json = nlohmann::json>
std::string error_of(const std::string& text) {
  try {
    parse_json_strict<Json>(text, "bits.json");
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(StrictJson, AcceptsValidDocumentsUnchanged) {
  const std::string text = R"({"a": [1, 2.5, {"b": null, "c": [true, "x"]}], "d": {"e": -1e300}, "f": {}})";
  EXPECT_EQ(parse_json_strict(text, "x.json"), nlohmann::json::parse(text));
  // The same key in different objects, and equal values, are fine.
  EXPECT_NO_THROW(parse_json_strict(R"({"k": {"k": 1}, "l": [{"k": 1}, {"k": 1}]})", "x.json"));
  // ordered_json keeps the file's key order.
  const auto ordered = parse_json_strict<nlohmann::ordered_json>(R"({"z": 1, "a": 2})", "x.json");
  EXPECT_EQ(ordered.begin().key(), "z");
}

TEST(StrictJson, DuplicateKeysAreRefusedWithTheirPath) {
  EXPECT_EQ(error_of(R"({"a": 1, "a": 2})"), R"(bits.json: key "a" appears twice in the object at /)");
  EXPECT_EQ(error_of(R"({"policy": {"x": 1, "y": 2, "x": 3}})"),
            R"(bits.json: key "x" appears twice in the object at /policy)");
  EXPECT_EQ(error_of(R"({"layers": [{"n": 1}, 5, {"w": 2, "w": 2}]})"),
            R"(bits.json: key "w" appears twice in the object at /layers/2)");
  EXPECT_EQ(error_of<nlohmann::ordered_json>(R"({"l": [[], [{"q": [], "q": 0}]]})"),
            R"(bits.json: key "q" appears twice in the object at /l/1/0)");
}

TEST(StrictJson, NumbersBeyondADoubleAreAFormatErrorNamingTheFile) {
  for (const char* text : {R"({"x": 1e400})", R"([-1e400])", R"({"a": {"b": [0, 2E+999]}})"}) {
    const std::string message = error_of(text);
    EXPECT_EQ(message.rfind("bits.json: ", 0), 0u) << text << " -> " << message;
    EXPECT_NE(message.find("number overflow"), std::string::npos) << message;
    EXPECT_EQ(message.find("json.exception"), std::string::npos) << message;
  }
  // Large integers beyond int64 still parse (as unsigned or floating point).
  EXPECT_NO_THROW(parse_json_strict(R"([18446744073709551615, 1e308])", "x.json"));
}

TEST(StrictJson, SyntaxErrorsNameTheFileAndPosition) {
  for (const char* text : {"", "{", R"({"a": 1,})", R"({"a" 1})", "[1, 2", "nul", R"({"a": 1} x)",
                           "// comment\n{}"}) {
    const std::string message = error_of(text);
    EXPECT_EQ(message.rfind("bits.json: not valid JSON: ", 0), 0u) << text << " -> " << message;
    EXPECT_NE(message.find("line"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace bitmix::detail
