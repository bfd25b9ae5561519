// Subcommand registry and argument parser of the attnkit CLI.
#include "command.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "attnkit/core/error.h"
#include "attnkit/core/parse.h"
#include "attnkit/core/runtime.h"

namespace attnkit::cli {

namespace {
std::map<std::string, Command>& Registry() {
  static std::map<std::string, Command> registry;
  return registry;
}
}  // namespace

void RegisterCommand(Command command) {
  auto name = command.name;
  Registry().emplace(std::move(name), std::move(command));
}
const std::map<std::string, Command>& Commands() { return Registry(); }

ArgParser::ArgParser(std::string usage, std::string description)
    : usage_(std::move(usage)), description_(std::move(description)) {
  AddFlag("help", "show this help and exit");
}

void ArgParser::AddFlag(const std::string& name, const std::string& help) {
  options_[name] = Option{"", help, true};
  option_order_.push_back(name);
}

void ArgParser::AddOption(const std::string& name, const std::string& default_value,
                          const std::string& help) {
  options_[name] = Option{default_value, help, false};
  option_order_.push_back(name);
}

void ArgParser::AddPositional(const std::string& name, const std::string& help, int min_count,
                              int max_count) {
  positional_name_ = name;
  positional_help_ = help;
  positional_min_ = min_count;
  positional_max_ = max_count;
}

bool ArgParser::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() > 2 && a[0] == '-' && a[1] == '-') {
      std::string name = a.substr(2), value;
      bool has_value = false;
      if (const auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      const auto it = options_.find(name);
      Require(it != options_.end(), "unknown option --", name, " (see --help)");
      if (it->second.is_flag) {
        Require(!has_value, "option --", name, " takes no value");
        values_[name] = "1";
      } else {
        if (!has_value) {
          Require(i + 1 < args.size(), "option --", name, " needs a value");
          value = args[++i];
        }
        values_[name] = value;
      }
    } else if (a == "-h") {
      values_["help"] = "1";
    } else {
      positionals_.push_back(a);
    }
  }
  if (Flag("help")) {
    std::cout << Help();
    return false;
  }
  const int n = static_cast<int>(positionals_.size());
  if (positional_name_.empty()) {
    Require(n == 0, "unexpected argument '", n > 0 ? positionals_[0] : "", "' (see --help)");
  } else {
    Require(n >= positional_min_, "missing argument <", positional_name_, "> (see --help)");
    Require(positional_max_ < 0 || n <= positional_max_, "too many arguments for <",
            positional_name_, "> (see --help)");
  }
  return true;
}

bool ArgParser::Flag(const std::string& name) const { return values_.count(name) > 0; }
bool ArgParser::Given(const std::string& name) const { return values_.count(name) > 0; }

std::string ArgParser::Get(const std::string& name) const {
  if (const auto v = values_.find(name); v != values_.end()) return v->second;
  const auto it = options_.find(name);
  Require(it != options_.end(), "internal: option --", name, " was never declared");
  return it->second.default_value;
}

int64_t ArgParser::GetInt(const std::string& name) const {
  return ParseSize(Get(name), "--" + name);
}
double ArgParser::GetDouble(const std::string& name) const {
  return ParseDouble(Get(name), "--" + name);
}

int ArgParser::GetThreads(const std::string& name) const {
  const int64_t n = GetInt(name);
  Require(n >= 0 && n <= kMaxThreads, "--", name, " must be between 0 (all cores) and ",
          kMaxThreads, ", got ", Get(name));
  return static_cast<int>(n);
}

std::string ArgParser::Help() const {
  std::ostringstream os;
  os << "usage: " << usage_ << "\n\n" << description_ << "\n";
  if (!positional_name_.empty()) {
    os << "\narguments:\n  <" << positional_name_ << ">  " << positional_help_ << "\n";
  }
  os << "\noptions:\n";
  for (const auto& name : option_order_) {
    const Option& o = options_.at(name);
    std::string left = "  --" + name + (o.is_flag ? "" : " VALUE");
    if (left.size() < 28) left.resize(28, ' ');
    os << left << " " << o.help;
    if (!o.is_flag && !o.default_value.empty()) os << " (default: " << o.default_value << ")";
    os << "\n";
  }
  return os.str();
}

int64_t ParseSize(const std::string& text, const std::string& what) {
  return ParseInteger(text, what);
}

double ParseDouble(const std::string& text, const std::string& what) {
  return ParseNumber(text, what);
}

uint64_t ArgParser::GetSeed(const std::string& name) const {
  return ParseSeed(Get(name), "--" + name);
}

}  // namespace attnkit::cli
