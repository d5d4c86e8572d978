#pragma once
// The command-line framework of the `bitmix` tool: subcommands register themselves, options
// are declared with their type, default and help, and bad input is reported in one line that
// names the flag and the accepted values (exit code 2). Runtime failures exit with code 1 and
// the bitmix::Error message.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace bitmix::cli {

// Bad command-line input: printed as "bitmix <command>: <message>", exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ArgParser {
 public:
  ArgParser(std::string command, std::string summary);

  // Declarations. `value_name` shows in --help ("N", "DIR"); an empty default means required
  // only if `required` is set, otherwise absent.
  ArgParser& flag(std::string name, std::string help);
  ArgParser& option(std::string name, std::string value_name, std::string help, std::string default_value = "",
                    bool required = false);
  // An option that may be given several times; get_strings() returns every value in order.
  ArgParser& repeated(std::string name, std::string value_name, std::string help);
  // An option that accepts only the listed values.
  ArgParser& choice(std::string name, std::vector<std::string> choices, std::string help,
                    std::string default_value = "");
  // Adds --data, --threads, --seed, --out, shared by every subcommand.
  ArgParser& common_options(bool with_data = true, bool with_out = true, std::string default_out = "");

  // Parses argv (after the subcommand name). Throws UsageError. Returns false if --help was
  // given (the help text has been printed).
  bool parse(int argc, char** argv);
  std::string help() const;

  bool has(std::string_view name) const;   // given on the command line or has a default
  bool given(std::string_view name) const; // given on the command line
  bool get_flag(std::string_view name) const;
  std::string get_string(std::string_view name) const;
  int64_t get_int(std::string_view name, int64_t min = INT64_MIN, int64_t max = INT64_MAX) const;
  double get_double(std::string_view name, double min = -1e300, double max = 1e300) const;
  // Every value of a repeated() option, in command-line order.
  std::vector<std::string> get_strings(std::string_view name) const;
  // Comma-separated integers, each within [min, max]: "2,3,4".
  std::vector<int> get_int_list(std::string_view name, int min, int max) const;

  // Applies --threads (sets the pool size) and returns --seed.
  uint64_t apply_common() const;

  const std::string& command() const { return command_; }

 private:
  struct Spec {
    std::string name;
    std::string value_name;  // empty for flags
    std::string help;
    std::string default_value;
    std::vector<std::string> choices;
    bool required = false;
    bool is_flag = false;
    bool is_repeated = false;
  };
  const Spec& spec(std::string_view name) const;
  [[noreturn]] void fail(std::string_view name, std::string_view value, std::string_view expected) const;

  std::string command_;
  std::string summary_;
  std::vector<Spec> specs_;
  std::map<std::string, std::string, std::less<>> values_;
  std::map<std::string, std::vector<std::string>, std::less<>> repeated_values_;
};

struct Command {
  std::string name;
  std::string summary;
  std::function<int(int argc, char** argv)> run;  // argv[0] is the subcommand name
};

// Called from a static initializer in each cmd_*.cpp file.
bool register_command(Command command);
const std::map<std::string, Command>& commands();

}  // namespace bitmix::cli
