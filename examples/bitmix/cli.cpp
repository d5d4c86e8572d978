#include "cli.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <iostream>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"

namespace bitmix::cli {

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {
  flag("help", "show this help and exit");
}

ArgParser& ArgParser::flag(std::string name, std::string help) {
  specs_.push_back({std::move(name), "", std::move(help), "", {}, false, true});
  return *this;
}

ArgParser& ArgParser::option(std::string name, std::string value_name, std::string help, std::string default_value,
                             bool required) {
  specs_.push_back({std::move(name), std::move(value_name), std::move(help), std::move(default_value), {}, required,
                    false});
  return *this;
}

ArgParser& ArgParser::repeated(std::string name, std::string value_name, std::string help) {
  specs_.push_back({std::move(name), std::move(value_name), std::move(help) + " (may be repeated)", "", {}, false, false,
                    true});
  return *this;
}

ArgParser& ArgParser::choice(std::string name, std::vector<std::string> choices, std::string help,
                             std::string default_value) {
  std::string value_name;
  for (const std::string& c : choices) value_name += (value_name.empty() ? "" : "|") + c;
  specs_.push_back({std::move(name), value_name, std::move(help), std::move(default_value), std::move(choices),
                    false, false});
  return *this;
}

ArgParser& ArgParser::common_options(bool with_data, bool with_out, std::string default_out) {
  if (with_data)
    option("data", "SPEC", "dataset: fashion-mnist[:DIR] | mnist:DIR | cifar10:DIR", "fashion-mnist");
  option("threads", "N", "worker threads (default: BITMIX_NUM_THREADS or all hardware threads)");
  option("seed", "S", "random seed; the same seed and thread count give the same numbers", "1");
  if (with_out) option("out", "DIR", "output directory", std::move(default_out), default_out.empty());
  return *this;
}

const ArgParser::Spec& ArgParser::spec(std::string_view name) const {
  for (const Spec& s : specs_)
    if (s.name == name) return s;
  throw std::logic_error(fmt::format("bitmix {}: option --{} was never declared", command_, name));
}

void ArgParser::fail(std::string_view name, std::string_view value, std::string_view expected) const {
  throw UsageError(fmt::format("--{} '{}': expected {}", name, value, expected));
}

bool ArgParser::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.size() < 3 || arg.substr(0, 2) != "--")
      throw UsageError(fmt::format("unexpected argument '{}' (options start with --; see --help)", arg));
    std::string_view name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (const auto eq = name.find('='); eq != std::string_view::npos) {
      inline_value = std::string(name.substr(eq + 1));
      name = name.substr(0, eq);
    }
    const Spec* found = nullptr;
    for (const Spec& s : specs_)
      if (s.name == name) found = &s;
    if (found == nullptr) {
      std::string known;
      for (const Spec& s : specs_) known += (known.empty() ? "--" : ", --") + s.name;
      throw UsageError(fmt::format("unknown option --{} (accepted: {})", name, known));
    }
    if (found->is_flag) {
      if (inline_value) throw UsageError(fmt::format("--{} takes no value", name));
      values_[found->name] = "1";
      continue;
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i + 1 >= argc) throw UsageError(fmt::format("--{} needs a value ({})", name, found->value_name));
      value = argv[++i];
    }
    if (!found->choices.empty()) {
      bool ok = false;
      for (const std::string& c : found->choices) ok |= c == value;
      if (!ok) fail(name, value, fmt::format("one of {}", fmt::join(found->choices, ", ")));
    }
    values_[found->name] = value;
    if (found->is_repeated) repeated_values_[found->name].push_back(value);
  }
  if (given("help")) {
    std::cout << help();
    return false;
  }
  for (const Spec& s : specs_)
    if (s.required && !given(s.name))
      throw UsageError(fmt::format("--{} is required ({})", s.name, s.help));
  return true;
}

std::string ArgParser::help() const {
  std::string text = fmt::format("usage: bitmix {} [options]\n\n{}\n\noptions:\n", command_, summary_);
  for (const Spec& s : specs_) {
    std::string left = "  --" + s.name + (s.value_name.empty() ? "" : " " + s.value_name);
    std::string right = s.help;
    if (!s.default_value.empty() && !s.is_flag) right += fmt::format(" [default: {}]", s.default_value);
    if (s.required) right += " (required)";
    text += fmt::format("{:<28} {}\n", left, right);
  }
  return text;
}

bool ArgParser::given(std::string_view name) const { return values_.find(name) != values_.end(); }

bool ArgParser::has(std::string_view name) const { return given(name) || !spec(name).default_value.empty(); }

bool ArgParser::get_flag(std::string_view name) const {
  spec(name);
  return given(name);
}

std::string ArgParser::get_string(std::string_view name) const {
  const Spec& s = spec(name);
  if (auto it = values_.find(name); it != values_.end()) return it->second;
  return s.default_value;
}

int64_t ArgParser::get_int(std::string_view name, int64_t min, int64_t max) const {
  const std::string text = get_string(name);
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  const std::string range = min == INT64_MIN && max == INT64_MAX ? "an integer"
                            : max == INT64_MAX                  ? fmt::format("an integer >= {}", min)
                                                                : fmt::format("an integer from {} to {}", min, max);
  if (text.empty() || ec != std::errc() || ptr != end || value < min || value > max) fail(name, text, range);
  return value;
}

double ArgParser::get_double(std::string_view name, double min, double max) const {
  const std::string text = get_string(name);
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  const std::string range = fmt::format("a number from {} to {}", min, max);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value) || value < min || value > max)
    fail(name, text, range);
  return value;
}

std::vector<std::string> ArgParser::get_strings(std::string_view name) const {
  spec(name);
  if (auto it = repeated_values_.find(name); it != repeated_values_.end()) return it->second;
  return {};
}

std::vector<int> ArgParser::get_int_list(std::string_view name, int min, int max) const {
  const std::string text = get_string(name);
  std::vector<int> result;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    int value = 0;
    auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size() || value < min || value > max)
      fail(name, text, fmt::format("a comma-separated list of integers from {} to {}", min, max));
    result.push_back(value);
    start = comma + 1;
  }
  return result;
}

uint64_t ArgParser::apply_common() const {
  if (given("threads")) set_num_threads(static_cast<int>(get_int("threads", 1, 1024)));
  return static_cast<uint64_t>(get_int("seed", 0));
}

namespace {
std::map<std::string, Command>& registry() {
  static std::map<std::string, Command> commands;
  return commands;
}
}  // namespace

bool register_command(Command command) {
  std::string name = command.name;
  registry().emplace(std::move(name), std::move(command));
  return true;
}

const std::map<std::string, Command>& commands() { return registry(); }

}  // namespace bitmix::cli
