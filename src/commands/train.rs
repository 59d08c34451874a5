//! What every training command (`sft|reward|ppo|moderate train`) shares at the edge:
//! `--print-config`.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::TrainArgs;
use crate::config::{self, StageConfig};
use crate::toml_file;

/// Prints the stage's config as TOML — `--config` with `--set` applied, or the defaults with
/// `--set` applied — without checking it: defaults alone name no data file yet.
pub fn print_config<C: StageConfig>(args: &TrainArgs) -> Result<()> {
    let overrides = args.options().overrides; // --force and --precision included
    let config: C = match &args.config {
        Some(path) => config::load(path, &overrides)?,
        None => toml_file::parse("", "the defaults", &overrides)?,
    };
    let text = config::to_toml(&config)?;
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout")
}
