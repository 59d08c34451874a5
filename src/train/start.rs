//! How every training run begins, written once: the config read with its `--set` overrides and
//! checked, the precision set, the output directory judged (new run, or `--resume` of the one
//! there), all before any tensor work, so bad input writes nothing.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::Device;

use super::state::{RunProgress, STATE_DIR};
use crate::checkpoint::{self, Lineage};
use crate::config::train::OutputConfig;
use crate::config::{self, StageConfig};
use crate::{bad_input, dist};

/// A training command's options, as the command line gave them.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The stage's TOML config.
    pub config: PathBuf,
    /// `--set section.key=value`, in order.
    pub overrides: Vec<String>,
    /// Continue the run in the config's output directory.
    pub resume: bool,
}

/// Reads the stage's config, sets its precision, checks it and the output directory.
pub fn load_config<C: StageConfig>(options: &TrainOptions, device: &Device) -> Result<C> {
    let config: C = config::load(&options.config, &options.overrides)?;
    crate::model::precision::set(config.train().precision, device);
    config.validate().map_err(|e| bad_input!("{}: {e}", options.config.display()))?;
    check_output(config.output(), options.resume)?;
    Ok(config)
}

/// Where a run to be resumed stopped: its progress and the lineage it was started with.
pub struct Resumed {
    pub progress: RunProgress,
    pub lineage: Lineage,
}

impl Resumed {
    /// Reads the run saved in `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let lineage = Lineage::read(dir).map_err(resume_error)?;
        let progress = RunProgress::read(&dir.join(STATE_DIR)).map_err(resume_error)?;
        Ok(Self { progress, lineage })
    }
}

/// A resumable run that cannot be resumed as asked is bad input.
pub fn resume_error(err: anyhow::Error) -> anyhow::Error {
    bad_input!("--resume: {err:#}")
}

/// Refuses to start over an existing run unless told to, and to resume where there is none;
/// first cleans up after a save that was killed (see `checkpoint::recover`) and makes sure the
/// checkpoint can be written at all, before any training time is spent.
fn check_output(output: &OutputConfig, resume: bool) -> Result<()> {
    let out = &output.dir;
    if dist::is_main() {
        checkpoint::recover(out)?;
    }
    checkpoint::check_writable(out)?;
    if resume && !RunProgress::exists(out) {
        return Err(resume_error(anyhow::anyhow!(
            "{} holds no resumable run (no {STATE_DIR}/)\nhint: drop --resume to start a new run",
            out.display()
        )));
    }
    if !resume && out.exists() && !output.overwrite {
        return Err(bad_input!(
            "{} already exists\nhint: pass --resume to continue that run, or --set output.overwrite=true to replace it",
            out.display()
        ));
    }
    Ok(())
}
