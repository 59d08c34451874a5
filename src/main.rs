//! Entry point: parse the command line, run, print an error once, exit with its code.

use clap::Parser;

use rlhf::error::{EXIT_INTERRUPTED, EXIT_OK, exit_code};

fn main() {
    rlhf::device::keep_freed_memory();
    let cli = rlhf::cli::Cli::parse();
    let code = match rlhf::commands::run(cli) {
        Ok(()) => EXIT_OK,
        Err(err) => {
            let code = exit_code(&err);
            if code == EXIT_INTERRUPTED {
                eprintln!("{err:#}"); // not a failure: the run stopped where it was asked to
            } else {
                eprintln!("error: {err:#}");
            }
            code
        }
    };
    std::process::exit(code);
}
