//! Dispatch from the parsed command line to the code that runs it.

mod chat;
mod demo;
mod dpo;
mod generate;
mod grpo;
mod model;
mod moderate;
mod ppo;
mod report;
mod reward;
mod serve;
mod sft;
mod tokenizer;
mod train;

use anyhow::Result;

use crate::cli::{
    Cli, Command, DpoCommand, GrpoCommand, KtoCommand, ModelCommand, ModerateCommand, PpoCommand,
    RewardCommand, SftCommand, TokenizerCommand,
};
use burn::prelude::Device;

use crate::config::dpo::{DpoConfig, KtoConfig};
use crate::config::grpo::GrpoConfig;
use crate::config::moderate::ModerateConfig;
use crate::config::ppo::PpoConfig;
use crate::config::reward::RewardConfig;
use crate::config::sft::SftConfig;
use crate::device::DeviceSpec;
use crate::model::precision;
use crate::{device, dist};

pub fn run(mut cli: Cli) -> Result<()> {
    device::set_threads(cli.threads)?;
    if let Some(chosen) = cli.precision {
        match cli.command.train_args() {
            // Recorded in the run's config like any override; the stage sets it from there.
            Some(args) => args.overrides.push(format!("train.precision={}", chosen.name())),
            None => precision::set(chosen, &cli.device.device()?),
        }
    }
    match &cli.command {
        Command::Sft(SftCommand::Train(a)) if a.print_config => {
            return train::print_config::<SftConfig>(a);
        }
        Command::Reward(RewardCommand::Train(a)) if a.print_config => {
            return train::print_config::<RewardConfig>(a);
        }
        Command::Ppo(PpoCommand::Train(a)) if a.print_config => {
            return train::print_config::<PpoConfig>(a);
        }
        Command::Dpo(DpoCommand::Train(a)) if a.print_config => {
            return train::print_config::<DpoConfig>(a);
        }
        Command::Kto(KtoCommand::Train(a)) if a.print_config => {
            return train::print_config::<KtoConfig>(a);
        }
        Command::Grpo(GrpoCommand::Train(a)) if a.print_config => {
            return train::print_config::<GrpoConfig>(a);
        }
        Command::Moderate(ModerateCommand::Train(a)) if a.print_config => {
            return train::print_config::<ModerateConfig>(a);
        }
        _ => {}
    }
    match cli.command {
        Command::Model(ModelCommand::Init(args)) => model::init(&args, &cli.device.device()?),
        Command::Model(ModelCommand::Inspect(args)) => model::inspect(&args, &cli.device.device()?),
        Command::Model(ModelCommand::Import(args)) => model::import(&args, &cli.device.device()?),
        Command::Model(ModelCommand::Export(args)) => model::export(&args, &cli.device.device()?),
        Command::Model(ModelCommand::Merge(args)) => model::merge(&args, &cli.device.device()?),
        Command::Sft(SftCommand::Train(args)) => {
            crate::sft::train(&args.options(), &joined(cli.device)?)
        }
        Command::Sft(SftCommand::Eval(args)) => sft::eval(&args, &cli.device.device()?),
        Command::Reward(RewardCommand::Train(args)) => {
            crate::reward::train(&args.options(), &joined(cli.device)?)
        }
        Command::Reward(RewardCommand::Eval(args)) => reward::eval(&args, &cli.device.device()?),
        Command::Reward(RewardCommand::Score(args)) => reward::score(&args, &cli.device.device()?),
        Command::Ppo(PpoCommand::Train(args)) => {
            crate::ppo::train::train(&args.options(), &joined(cli.device)?)
        }
        Command::Ppo(PpoCommand::Eval(args)) => ppo::eval(&args, &cli.device.device()?),
        Command::Dpo(DpoCommand::Train(args)) => {
            crate::dpo::train(&args.options(), &joined(cli.device)?)
        }
        Command::Dpo(DpoCommand::Eval(args)) => dpo::eval(&args, &cli.device.device()?),
        Command::Kto(KtoCommand::Train(args)) => {
            crate::dpo::kto::train(&args.options(), &joined(cli.device)?)
        }
        Command::Grpo(GrpoCommand::Train(args)) => {
            crate::grpo::train(&args.options(), &joined(cli.device)?)
        }
        Command::Grpo(GrpoCommand::Eval(args)) => grpo::eval(&args, &cli.device.device()?),
        Command::Moderate(ModerateCommand::Train(args)) => {
            crate::moderation::train::train(&args.options(), &joined(cli.device)?)
        }
        Command::Moderate(ModerateCommand::Eval(args)) => {
            moderate::eval(&args, &cli.device.device()?)
        }
        Command::Moderate(ModerateCommand::Score(args)) => {
            moderate::score(&args, &cli.device.device()?)
        }
        Command::Chat(args) => chat::chat(&args, &cli.device.device()?),
        Command::Generate(args) => generate::generate(&args, &cli.device.device()?),
        Command::Serve(args) => serve::serve(&args, &cli.device.device()?),
        Command::Tokenizer(TokenizerCommand::Train(args)) => tokenizer::train(&args),
        Command::Plot(args) => report::plot(&args),
        Command::Report(args) => report::report(&args),
        Command::Demo(command) => demo::run(&command),
    }
}

/// A training command's device, after joining the job a launcher (torchrun, srun, mpirun)
/// started, if any (see `dist::init`).
fn joined(device: DeviceSpec) -> Result<Device> {
    dist::init(device)?.device()
}
