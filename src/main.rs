//! Entry point: parse the command line, run, print an error once, exit with its code.

use clap::Parser;

use rlhf::error::{EXIT_OK, exit_code};

fn main() {
    let cli = rlhf::cli::Cli::parse();
    let code = match rlhf::commands::run(cli) {
        Ok(()) => EXIT_OK,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit_code(&err)
        }
    };
    std::process::exit(code);
}
