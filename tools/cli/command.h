// The attnkit CLI: a registry of subcommands and a small argument parser they share.
//
// Each subcommand lives in its own tools/cli/cmd_<name>.cc and registers itself with a static
// CommandRegistrar, so adding a subcommand touches no other file. Errors are reported by throwing
// attnkit::Error; main() prints one line "attnkit <cmd>: error: <message>" and exits with 2.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace attnkit::cli {

struct Command {
  std::string name;
  std::string summary;  // one line for `attnkit --help`
  std::function<int(const std::vector<std::string>& args)> run;
};

void RegisterCommand(Command command);
const std::map<std::string, Command>& Commands();

struct CommandRegistrar {
  explicit CommandRegistrar(Command command) { RegisterCommand(std::move(command)); }
};

// Parses `--name value`, `--name=value`, boolean `--flag`, and positionals. Unknown options,
// missing values and malformed numbers throw attnkit::Error naming the option.
class ArgParser {
 public:
  ArgParser(std::string usage, std::string description);

  void AddFlag(const std::string& name, const std::string& help);
  void AddOption(const std::string& name, const std::string& default_value,
                 const std::string& help);
  // max_count < 0: any number of positionals.
  void AddPositional(const std::string& name, const std::string& help, int min_count = 1,
                     int max_count = 1);

  // Returns false when --help was asked for (the help text has been printed to stdout).
  bool Parse(const std::vector<std::string>& args);

  bool Flag(const std::string& name) const;
  bool Given(const std::string& name) const;  // option given explicitly on the command line
  std::string Get(const std::string& name) const;
  // An integer by the one rule of core/parse.h: 4096, 32k, 1m, -1 (k=1024, m=1024^2, g=1024^3);
  // never saturates.
  int64_t GetInt(const std::string& name) const;
  // A seed: decimal digits only, 0 … 2^64 − 1 (the same for every subcommand).
  uint64_t GetSeed(const std::string& name = "seed") const;
  double GetDouble(const std::string& name) const;
  // A thread count: 0 (= all cores) … kMaxThreads; anything else throws naming the option.
  int GetThreads(const std::string& name = "threads") const;
  const std::vector<std::string>& Positionals() const { return positionals_; }
  std::string Help() const;

 private:
  struct Option {
    std::string default_value;
    std::string help;
    bool is_flag = false;
  };
  std::string usage_, description_;
  std::map<std::string, Option> options_;
  std::vector<std::string> option_order_;
  std::string positional_name_, positional_help_;
  int positional_min_ = 0, positional_max_ = 0;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positionals_;
};

// ParseInteger / ParseNumber of core/parse.h (the CLI's one rule). `what` names the argument.
int64_t ParseSize(const std::string& text, const std::string& what);
double ParseDouble(const std::string& text, const std::string& what);

}  // namespace attnkit::cli
