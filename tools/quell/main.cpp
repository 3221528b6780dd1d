// quell: how much analog noise hurts a neural network, where, and how to make it stop.
#include <iostream>

#include "common.h"
#include "quell/dist.h"
#include "quell/progress.h"

namespace {
// Under mpirun an error on one rank must end the whole job, or the others wait forever.
int fail(int code) {
  if (quell::dist::size() > 1) quell::dist::abort(code);
  quell::dist::finalize();
  return code;
}
}  // namespace

int main(int argc, char** argv) {
  quell::dist::init(&argc, &argv);
  // The library's notes (skipped files, subsets) are for the person at the terminal.
  quell::set_note_sink([](const std::string& line) { std::cerr << line << "\n"; });
  CLI::App app{"quell: noise sensitivity of neural networks on analog / mixed-signal hardware"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("quell ") + quell::version_string());
  quell::cli::add_sites_command(app);
  quell::cli::add_train_command(app);
  quell::cli::add_eval_command(app);
  quell::cli::add_walk_command(app);
  quell::cli::add_denoise_command(app);
  quell::cli::add_inspect_command(app);
  quell::cli::add_cost_command(app);
  quell::cli::add_plan_command(app);
  // A mistyped command gets named, not just "a subcommand is required".
  if (argc > 1 && argv[1][0] != '-') {
    try {
      app.get_subcommand_ptr(argv[1]);
    } catch (const CLI::OptionNotFound&) {
      std::string known;
      const CLI::App& all = app;  // the const overload lists every defined command
      for (const CLI::App* sub : all.get_subcommands(nullptr)) {
        known += (known.empty() ? "" : ", ") + sub->get_name();
      }
      std::cerr << "quell: error: unknown command '" << argv[1] << "' (known: " << known
                << "; see --help)\n";
      return fail(2);
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    quell::dist::finalize();
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    quell::dist::finalize();
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    quell::dist::finalize();
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "quell: error: " << e.what() << " (see --help)\n";
    return fail(2);
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    const auto nl = msg.find('\n');
    std::cerr << "quell: error: " << msg.substr(0, nl) << "\n";
    return fail(1);
  } catch (const std::exception& e) {
    std::cerr << "quell: error: " << e.what() << "\n";
    return fail(1);
  }
  quell::dist::finalize();
  return 0;
}
