#pragma once
// Strict JSON parsing for every file bitmix reads (BitConfigs, run metadata, latency tables,
// summaries). nlohmann::json alone accepts an object with a key written twice (the last one
// silently wins) and reports a number such as 1e400 as an internal out_of_range exception with
// no file name. Here both, and every syntax error, are a FormatError that names the source and,
// for duplicates, the JSON path of the object (e.g. "/layers/3"), so a user can find the line.
//
// Header-only and internal (src/core/): each module that reads JSON already links
// nlohmann_json; the public API never names it.

#include <fmt/format.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/core/error.hpp"

namespace bitmix::detail {

// nlohmann's messages start with "[json.exception.parse_error.101] "; the category is noise
// to a user, the rest ("parse error at line 3, column 7: ...") is what they need.
inline std::string json_error_text(const std::exception& e) {
  std::string text = e.what();
  if (text.rfind("[json.exception.", 0) == 0) {
    const auto close = text.find("] ");
    if (close != std::string::npos) text.erase(0, close + 2);
  }
  return text;
}

// Parses `text`; `source` (a file name, or "<file> (bit_config)") starts every message.
// Json is nlohmann::json or nlohmann::ordered_json.
template <class Json = nlohmann::json>
Json parse_json_strict(std::string_view text, std::string_view source) {
  // One frame per open object or array: the keys seen so far (objects), the key or index the
  // parser is inside (for the path of a duplicate).
  struct Frame {
    bool array = false;
    std::set<std::string> keys;
    std::string last_key;
    int64_t next_index = 0;
  };
  std::vector<Frame> frames;
  auto path_of_open_object = [&frames] {
    std::string path;
    for (std::size_t i = 0; i + 1 < frames.size(); ++i)
      path += frames[i].array ? fmt::format("/{}", frames[i].next_index - 1) : "/" + frames[i].last_key;
    return path.empty() ? std::string("/") : path;
  };
  // An element starts: count it when its parent is an array.
  auto element_starts = [&frames] {
    if (!frames.empty() && frames.back().array) ++frames.back().next_index;
  };
  using Event = nlohmann::json::parse_event_t;
  auto callback = [&](int /*depth*/, Event event, Json& parsed) -> bool {
    switch (event) {
      case Event::object_start:
        element_starts();
        frames.push_back(Frame{});
        break;
      case Event::array_start:
        element_starts();
        frames.push_back(Frame{true, {}, {}, 0});
        break;
      case Event::key: {
        std::string key = parsed.template get<std::string>();
        Frame& f = frames.back();
        if (!f.keys.insert(key).second)
          throw FormatError(fmt::format("{}: key \"{}\" appears twice in the object at {}", source, key,
                                        path_of_open_object()));
        f.last_key = std::move(key);
        break;
      }
      case Event::value: element_starts(); break;
      case Event::object_end:
      case Event::array_end: frames.pop_back(); break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::out_of_range& e) {
    // 406: a number nlohmann cannot represent ("number overflow parsing '1e400'").
    throw FormatError(fmt::format("{}: {} (numbers must fit a double)", source, json_error_text(e)));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: not valid JSON: {}", source, json_error_text(e)));
  }
}

}  // namespace bitmix::detail
