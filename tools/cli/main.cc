// Entry point of the `attnkit` command-line tool: dispatches to the registered subcommands.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "command.h"

namespace {
void PrintUsage() {
  std::cout << "attnkit " << attnkit::Version()
            << ": attention variants of modern LLMs, measured and drawn on this machine.\n\n"
               "usage: attnkit <command> [options]   (attnkit <command> --help for details)\n\n"
               "commands:\n";
  for (const auto& [name, cmd] : attnkit::cli::Commands()) {
    std::string left = "  " + name;
    if (left.size() < 14) left.resize(14, ' ');
    std::cout << left << " " << cmd.summary << "\n";
  }
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    PrintUsage();
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::cout << "attnkit " << attnkit::Version() << "\n";
    return 0;
  }
  const auto& commands = attnkit::cli::Commands();
  const auto it = commands.find(args[0]);
  if (it == commands.end()) {
    std::cerr << "attnkit: error: unknown command '" << args[0] << "' (see attnkit --help)\n";
    return 2;
  }
  try {
    return it->second.run(std::vector<std::string>(args.begin() + 1, args.end()));
  } catch (const attnkit::Error& e) {
    std::cerr << "attnkit " << args[0] << ": error: " << e.what() << "\n";
  } catch (const std::bad_alloc&) {
    std::cerr << "attnkit " << args[0] << ": error: out of memory\n";
  } catch (const std::exception& e) {
    std::cerr << "attnkit " << args[0] << ": error: " << e.what() << "\n";
  }
  return 2;
}
