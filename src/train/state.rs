//! `state/` in a checkpoint: where the run stands and the optimizer's moments, for `--resume`.
//! The learning rate is a function of the step and the data order of (seed, epoch), so these
//! few numbers are the whole state.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::json_file;

pub const STATE_DIR: &str = "state";
const PROGRESS_FILE: &str = "trainer.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// With `train.keep_best`, the best step's weights when the model on disk is a later step's.
pub const BEST_FILE: &str = "best.safetensors";

/// How far a run has come.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    /// Optimizer steps done.
    pub step: usize,
    /// The epoch being read (0-based) and how many of its micro-batches are consumed.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    /// Real tokens trained on so far.
    pub tokens: u64,
    /// Training time so far, seconds.
    pub seconds: f64,
    /// The best validation score so far (higher is better) and its step.
    #[serde(default)]
    pub best: Option<BestStep>,
    /// Evaluations since the best one (for `train.patience`).
    #[serde(default)]
    pub evals_since_best: usize,
    /// The step `train.patience` ended the run at, if it did.
    #[serde(default)]
    pub stopped_at: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestStep {
    pub step: usize,
    pub score: f64,
}

impl RunProgress {
    pub fn write(&self, state_dir: &Path) -> Result<()> {
        json_file::write(&state_dir.join(PROGRESS_FILE), self)
    }

    pub fn read(state_dir: &Path) -> Result<Self> {
        json_file::read(&state_dir.join(PROGRESS_FILE))
    }

    /// Whether `run_dir` holds a resumable state.
    pub fn exists(run_dir: &Path) -> bool {
        run_dir.join(STATE_DIR).join(PROGRESS_FILE).is_file()
    }
}
