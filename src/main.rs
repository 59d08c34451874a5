//! Entry point: parse the command line, run, print an error once, exit with its code.

use clap::Parser;

use rlhf::error::{EXIT_OK, Interrupted, exit_code};

fn main() {
    rlhf::device::keep_freed_memory();
    let cli = rlhf::cli::Cli::parse();
    let code = match rlhf::commands::run(cli) {
        Ok(()) => EXIT_OK,
        Err(err) => {
            if err.chain().any(|e| e.is::<Interrupted>()) {
                eprintln!("{err:#}"); // not a failure: the run stopped where it was asked to
            } else {
                eprintln!("error: {err:#}");
            }
            exit_code(&err)
        }
    };
    std::process::exit(code);
}
