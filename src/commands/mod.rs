//! Dispatch from the parsed command line to the code that runs it.

mod generate;
mod model;
mod tokenizer;

use anyhow::Result;

use crate::cli::{Cli, Command, ModelCommand, TokenizerCommand};
use crate::device;
use crate::error::NotYetAvailable;

pub fn run(cli: Cli) -> Result<()> {
    device::set_threads(cli.threads)?;
    match cli.command {
        Command::Model(ModelCommand::Init(args)) => model::init(&args, &cli.device.device()?),
        Command::Model(ModelCommand::Inspect(args)) => model::inspect(&args, &cli.device.device()?),
        Command::Sft(_) => not_yet("sft"),
        Command::Reward(_) => not_yet("reward"),
        Command::Ppo(_) => not_yet("ppo"),
        Command::Moderate(_) => not_yet("moderate"),
        Command::Chat(_) => not_yet("chat"),
        Command::Generate(args) => generate::generate(&args, &cli.device.device()?),
        Command::Tokenizer(TokenizerCommand::Train(args)) => tokenizer::train(&args),
    }
}

/// Stages that have not landed say so and exit 1; they never print made-up output.
fn not_yet(command: &'static str) -> Result<()> {
    Err(NotYetAvailable(command).into())
}
