//! How every training run begins, written once: the config read with its `--set` overrides and
//! checked, the precision set, the output directory judged (new run, or `--resume` of the one
//! there), all before any tensor work, so bad input writes nothing.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::module::Module;
use burn::prelude::Device;
use tokenizers::Tokenizer;

use super::state::{RunProgress, STATE_DIR};
use crate::checkpoint::{self, Lineage, Source};
use crate::config::train::{ModelSource, OutputConfig};
use crate::config::{self, StageConfig};
use crate::data::tokenizer;
use crate::model::adapter::{self, Adapter};
use crate::model::config::missing_model;
use crate::model::lora::{self, LoraRun, LoraSpec};
use crate::model::prefix_cache::frozen_blocks;
use crate::model::pretrained::init_causal_lm;
use crate::model::{CausalLm, ModelConfig, load_causal_lm, preset};
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
    /// With `resume`: continue even where the config differs from the run's in keys that
    /// change what is trained (see `EXTENDING_KEYS` for those that never need it).
    pub accept_changes: bool,
}

/// Keys a resumed run may change without `--accept-changes`: they only extend the run or
/// change how it is watched, not what a step computes.
pub const EXTENDING_KEYS: &[&str] = &[
    "train.max_steps",
    "train.epochs",
    "train.eval_every",
    "train.save_every",
    "train.log_every",
    "train.patience",
    "output.overwrite",
    "samples.count",
    "samples.max_new_tokens",
    "ppo.log_samples_every",
];

/// Data files are compared by path and content when a run resumes (`Trainer::new`), with an
/// error of their own.
const DATA_FILE_KEYS: &[&str] = &["data.train", "data.valid", "data.prompts", "data.ptx"];

/// A key whose value differs between two resolved configs: (key, before, now).
pub type Change = (String, serde_json::Value, serde_json::Value);

/// Reads the stage's config, sets its precision, checks it and the output directory.
pub fn load_config<C: StageConfig>(options: &TrainOptions, device: &Device) -> Result<C> {
    let config: C = config::load(&options.config, &options.overrides)?;
    crate::model::precision::set(config.train().precision, device);
    config.validate().map_err(|e| bad_input!("{}: {e}", options.config.display()))?;
    check_paths(&config, options)?;
    check_output(config.output(), options.resume)?;
    if options.resume {
        check_changes(&config, options)?;
    }
    Ok(config)
}

/// Every file and model directory the config names exists, or the error names its key (a
/// resumed run reads its model from the output directory, so only its data is checked).
fn check_paths<C: StageConfig>(config: &C, options: &TrainOptions) -> Result<()> {
    for named in config.paths() {
        let path = named.path;
        let problem = match named.model {
            true if options.resume || path.is_dir() => continue,
            true => missing_model(path),
            false if path.is_file() => continue,
            false if path.is_dir() => "a directory, not a file".into(),
            false => "no such file".into(),
        };
        let (first, hint) = problem.split_once('\n').unwrap_or((&problem, ""));
        let rule = match path.is_relative() {
            true => {
                let cwd = std::env::current_dir().unwrap_or_default();
                format!(
                    " (paths in a config are read from the current directory, {})",
                    cwd.display()
                )
            }
            false => String::new(),
        };
        let hint = if hint.is_empty() { String::new() } else { format!("\n{hint}") };
        return Err(bad_input!(
            "{}: key `{}` = \"{}\": {first}{rule}{hint}",
            options.config.display(),
            named.key,
            path.display()
        ));
    }
    Ok(())
}

/// Resuming with another config is refused unless only `EXTENDING_KEYS` changed or the user
/// said `--accept-changes`: a run whose learning rate changes halfway is not the run its
/// lineage describes.
fn check_changes<C: StageConfig>(config: &C, options: &TrainOptions) -> Result<()> {
    let out = &config.output().dir;
    let previous = Lineage::read(out).map_err(resume_error)?;
    let now = serde_json::to_value(config)?;
    let changes = config_changes(&previous.config["config"], &now);
    let allowed = |key: &str| EXTENDING_KEYS.contains(&key) || DATA_FILE_KEYS.contains(&key);
    let refused: Vec<&Change> = changes.iter().filter(|(key, ..)| !allowed(key)).collect();
    if refused.is_empty() || options.accept_changes {
        return Ok(());
    }
    let listed: Vec<String> =
        refused.iter().map(|(key, before, now)| format!("  {key}: {before} → {now}")).collect();
    Err(resume_error(anyhow::anyhow!(
        "the config differs from the one {} was trained with:\n{}\nhint: resume with the run's values, or add --accept-changes to continue with these knowingly (the lineage records them)",
        out.display(),
        listed.join("\n")
    )))
}

/// Every leaf key whose value differs between two resolved configs, dotted, in order.
pub fn config_changes(before: &serde_json::Value, now: &serde_json::Value) -> Vec<Change> {
    fn walk(
        prefix: &str,
        before: &serde_json::Value,
        now: &serde_json::Value,
        out: &mut Vec<Change>,
    ) {
        use serde_json::Value::{Null, Object};
        match (before, now) {
            (Object(a), Object(b)) => {
                let keys = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k)));
                for key in keys {
                    let name =
                        if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    walk(&name, a.get(key).unwrap_or(&Null), b.get(key).unwrap_or(&Null), out);
                }
            }
            (a, b) if a != b => out.push((prefix.to_string(), a.clone(), b.clone())),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", before, now, &mut out);
    out
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
            "{} already exists\nhint: pass --resume to continue that run, or --force to replace it (output.overwrite = true in a config)",
            out.display()
        ));
    }
    Ok(())
}

/// Where a stage's causal LM comes from: a checkpoint (`base`), or a preset (`init`) drawn at
/// random with a `tokenizer`.
#[derive(Debug, Clone, Copy)]
pub struct LmSource<'a> {
    pub base: Option<&'a Path>,
    pub init: Option<&'a str>,
    pub tokenizer: Option<&'a Path>,
    /// Adapters on `base` instead of training it, in the top `train_layers` blocks (0: all).
    pub lora: Option<&'a LoraSpec>,
    pub train_layers: usize,
}

impl<'a> LmSource<'a> {
    pub fn of(model: &'a ModelSource) -> Self {
        Self {
            base: model.base.as_deref(),
            init: model.init.as_deref(),
            tokenizer: model.tokenizer.as_deref(),
            lora: model.lora.as_ref(),
            train_layers: model.train_layers,
        }
    }
}

/// The causal LM a run starts from (SFT, DPO, KTO), and for `--resume` where it stopped.
pub struct CausalStart {
    pub model: CausalLm,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    /// Where the tokenizer files (and the `model` chat template) come from.
    pub tokenizer_dir: PathBuf,
    pub parent: Option<Source>,
    pub resumed: Option<Resumed>,
    /// With `[model.lora]`: the run saves adapters for this base.
    pub lora: Option<LoraRun>,
}

impl CausalStart {
    /// Loads the model `source` names onto `ad` (a preset is drawn with `seed`), or with
    /// `resume` the run saved in `out`. `stage` names the stage in errors.
    pub fn open(
        stage: &str,
        source: LmSource,
        out: &Path,
        resume: bool,
        seed: u64,
        ad: &Device,
    ) -> Result<Self> {
        if let (true, Some(spec)) = (resume, source.lora) {
            // The base, adapters attached as the run attached them, then the saved ones.
            let resumed = Resumed::read(out)?;
            let base = Adapter::open(out).map_err(resume_error)?.base;
            let loaded = load_causal_lm(&base, ad)?;
            let model = with_lora(loaded.model, spec, &loaded.config, source.train_layers)?;
            let model = adapter::restore(model, out, loaded.config.layout(), ad)?;
            return Ok(Self {
                model,
                config: loaded.config,
                tokenizer: tokenizer::read(out)?,
                tokenizer_dir: out.to_path_buf(),
                parent: resumed.lineage.parent.clone(),
                resumed: Some(resumed),
                lora: Some(LoraRun { spec: spec.clone(), base }),
            });
        }
        if resume {
            let loaded = load_causal_lm(out, ad)?;
            let resumed = Resumed::read(out)?;
            let tokenizer = loaded
                .tokenizer
                .ok_or_else(|| bad_input!("{}: no tokenizer.json", out.display()))?;
            return Ok(Self {
                model: loaded.model,
                config: loaded.config,
                tokenizer,
                tokenizer_dir: out.to_path_buf(),
                parent: resumed.lineage.parent.clone(),
                resumed: Some(resumed),
                lora: None,
            });
        }
        if let Some(base) = source.base {
            let loaded = load_causal_lm(base, ad)?;
            let tokenizer = loaded.tokenizer.ok_or_else(|| {
                bad_input!(
                    "{}: no tokenizer.json\nhint: {stage} needs the base model's tokenizer",
                    base.display()
                )
            })?;
            let (model, lora) = match source.lora {
                Some(spec) => {
                    ad.seed(seed);
                    let model = with_lora(loaded.model, spec, &loaded.config, source.train_layers)?;
                    (model, Some(LoraRun { spec: spec.clone(), base: base.to_path_buf() }))
                }
                None => (loaded.model, None),
            };
            return Ok(Self {
                model,
                config: loaded.config,
                tokenizer,
                tokenizer_dir: base.to_path_buf(),
                parent: Some(Source::model_dir(base)?),
                resumed: None,
                lora,
            });
        }
        let (preset_name, tokenizer_path) = (
            source.init.expect("validated: init or base"),
            source.tokenizer.expect("validated: init comes with tokenizer"),
        );
        let tokenizer = tokenizer::read(tokenizer_path)?;
        let tokenizer_dir = tokenizer::files_dir(tokenizer_path).to_path_buf();
        let model_config = preset::resolve(preset_name, &[], &tokenizer, &tokenizer_dir)?;
        ad.seed(seed);
        let model = init_causal_lm(&model_config, ad)?;
        Ok(Self {
            model,
            config: model_config,
            tokenizer,
            tokenizer_dir,
            parent: None,
            resumed: None,
            lora: None,
        })
    }
}

/// `model` frozen, with LoRA adapters on the top `train_layers` blocks (0: all of them).
pub fn with_lora<M: Module>(
    model: M,
    spec: &LoraSpec,
    config: &ModelConfig,
    train_layers: usize,
) -> Result<M> {
    let first_block = frozen_blocks(config.depth_and_heads().0, train_layers);
    lora::attach(model, spec, config.layout(), first_block)
}
