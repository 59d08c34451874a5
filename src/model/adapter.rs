//! LoRA adapters on disk, as `peft`'s `save_pretrained` writes them, so that
//! `PeftModel.from_pretrained(base, dir)` loads ours and we load theirs:
//! `adapter_config.json` and `adapter_model.safetensors`, whose tensors are named
//! `base_model.model.<module>.lora_A.weight` (`[r, D_in]`) and `….lora_B.weight` (`[D_out, r]`),
//! and whose heads trained in full (`modules_to_save`, a reward model's `score`) are stored
//! whole.
//!
//! Reading one merges it into its base (W + (α/r)·B·A, as `merge_and_unload`), so that
//! everything that reads a model directory reads an adapter directory too.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{HeadKind, ModelConfig};
use super::lora::{ADAPTER_MODULE, LoraSpec};
use super::naming::HfLayout;
use super::weights::{self, NamedTensors};
use crate::bad_input;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// What `PeftModel` puts before a module's name in the base model.
const PEFT_PREFIX: &str = "base_model.model.";

/// Whether `dir` holds an adapter rather than a whole model.
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file() && !dir.join("config.json").is_file()
}

/// The `adapter_config.json` keys `rlhf` reads and writes (`peft.LoraConfig`); others a
/// `peft` release adds are kept as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default = "peft_default")]
    pub r: usize,
    #[serde(default = "peft_default_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default)]
    pub target_modules: Value,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default = "no_bias")]
    pub bias: String,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub inference_mode: bool,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

fn no_bias() -> String {
    "none".into()
}

/// `peft.LoraConfig`'s `r` and `lora_alpha` when a file leaves them out.
fn peft_default() -> usize {
    8
}

fn peft_default_alpha() -> f64 {
    8.0
}

/// The task an adapter was trained for, as `peft` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    CausalLm,
    /// A reward or value model (`*ForSequenceClassification`, one label).
    SeqCls,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::CausalLm => "CAUSAL_LM",
            Task::SeqCls => "SEQ_CLS",
        }
    }
}

impl AdapterConfig {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let config: Self = crate::json_file::read(&path)?;
        match config.unsupported() {
            Some(what) => Err(bad_input!(
                "{}: {what} is not supported (rlhf reads LoRA adapters with one rank and alpha, without bias or DoRA)",
                path.display()
            )),
            None => Ok(config),
        }
    }

    /// What in the file `rlhf` cannot apply, if anything.
    fn unsupported(&self) -> Option<String> {
        if self.peft_type != "LORA" {
            return Some(format!("peft_type \"{}\"", self.peft_type));
        }
        if self.use_dora {
            return Some("use_dora = true".into());
        }
        if self.bias != "none" {
            return Some(format!("bias \"{}\"", self.bias));
        }
        if self.r == 0 {
            return Some("r = 0".into());
        }
        let per_module = |key: &str| {
            self.rest.get(key).and_then(Value::as_object).is_some_and(|o| !o.is_empty())
        };
        ["rank_pattern", "alpha_pattern"]
            .into_iter()
            .find(|key| per_module(key))
            .map(|key| format!("a per-module `{key}`"))
    }

    /// α/r, or α/√r with `use_rslora`.
    pub fn scale(&self) -> f64 {
        match self.use_rslora {
            true => self.lora_alpha / (self.r as f64).sqrt(),
            false => self.lora_alpha / self.r as f64,
        }
    }

    pub fn task(&self) -> Task {
        match self.task_type.as_deref() {
            Some("SEQ_CLS") => Task::SeqCls,
            _ => Task::CausalLm,
        }
    }
}

/// An adapter directory, opened: its config and where its base model is.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub dir: PathBuf,
    pub config: AdapterConfig,
    /// The base model directory: `rlhf.json`'s parent when there is one (its hash checked),
    /// else `base_model_name_or_path`.
    pub base: PathBuf,
}

impl Adapter {
    pub fn open(dir: &Path) -> Result<Self> {
        let config = AdapterConfig::read(dir)?;
        let lineage = crate::checkpoint::Lineage::read(dir).ok();
        let recorded = lineage.as_ref().and_then(|l| l.parent.clone());
        let named = match (&recorded, &config.base_model_name_or_path) {
            (Some(parent), _) => parent.path.clone(),
            (None, Some(name)) => name.clone(),
            (None, None) => {
                return Err(bad_input!(
                    "{}: no base model named (base_model_name_or_path in {CONFIG_FILE})",
                    dir.display()
                ));
            }
        };
        // As written (relative to where the run was started), else relative to the adapter.
        let as_named = PathBuf::from(&named);
        let beside = dir.join(&as_named);
        let base = match (as_named.is_dir(), beside.is_dir()) {
            (true, _) => as_named,
            (false, true) => beside,
            (false, false) => {
                return Err(bad_input!(
                    "{}: its base model `{named}` is not there\nhint: the adapter needs the model it was trained on; put it back at that path (or edit base_model_name_or_path in {CONFIG_FILE})",
                    dir.display()
                ));
            }
        };
        if let Some(parent) = recorded {
            let now = crate::checkpoint::Source::model_dir(&base)?;
            if now.sha256 != parent.sha256 {
                return Err(bad_input!(
                    "{}: its base model {} is not the one it was trained on (sha256 {} in rlhf.json, {} now)\nhint: use the base model the adapter was trained on",
                    dir.display(),
                    base.display(),
                    short(&parent.sha256),
                    short(&now.sha256)
                ));
            }
        }
        Ok(Self { dir: dir.to_path_buf(), config, base })
    }

    /// The config of the adapted model: the base's, with a score head for `SEQ_CLS`.
    pub fn model_config(&self, base: &ModelConfig) -> Result<ModelConfig> {
        match self.config.task() {
            Task::CausalLm => Ok(base.clone()),
            Task::SeqCls => {
                let mut json = base.to_json(HeadKind::Scalar);
                json.remove("id2label");
                json.remove("label2id");
                json.insert("num_labels".into(), 1.into());
                ModelConfig::from_json(json)
            }
        }
    }

    /// Folds the adapter into `tensors` (the base's, by checkpoint name): W + scale·B·A for each
    /// adapted weight, and the heads it saved whole put in place.
    pub fn merge_into(&self, tensors: &mut NamedTensors, layout: HfLayout) -> Result<()> {
        let path = self.dir.join(WEIGHTS_FILE);
        let mut adapter = weights::read_file(&path)?;
        if self.config.task() == Task::SeqCls {
            // A classifier over a language model's body (`*ForSequenceClassification`, as
            // `peft` adapts it) keeps no LM head.
            tensors.remove("lm_head.weight");
        }
        let device = crate::device::DeviceSpec::Cpu.device()?;
        let names: Vec<String> = adapter.keys().cloned().collect();
        let scale = self.config.scale();
        for name in names {
            let Some(module) = name.strip_suffix(".lora_A.weight") else { continue };
            let module = module.strip_prefix(PEFT_PREFIX).unwrap_or(module);
            let a = adapter.remove(&name).expect("listed");
            let b_name = name.replace(".lora_A.weight", ".lora_B.weight");
            let b = adapter
                .remove(&b_name)
                .ok_or_else(|| bad_input!("{}: `{name}` has no `{b_name}`", path.display()))?;
            let key = format!("{module}.weight");
            let w = tensors.remove(&key).ok_or_else(|| {
                bad_input!(
                    "{}: adapts `{module}`, which the base model {} does not have",
                    path.display(),
                    self.base.display()
                )
            })?;
            let (a, b) = (Tensor::<2>::from_data(a, &device), Tensor::<2>::from_data(b, &device));
            let delta = b.matmul(a).mul_scalar(scale); // [D_out, D_in], nn.Linear's layout
            let w = Tensor::<2>::from_data(w, &device);
            let conv1d = layout.body_is_conv1d && module.starts_with(layout.body_prefix);
            let delta = if conv1d { delta.transpose() } else { delta };
            if delta.dims() != w.dims() {
                return Err(bad_input!(
                    "{}: `{module}`'s update has shape {:?}, the base weight {:?}\nhint: the adapter was trained on another model",
                    path.display(),
                    delta.dims(),
                    w.dims()
                ));
            }
            tensors.insert(key, (w + delta).into_data());
        }
        // What is left was saved whole (`modules_to_save`).
        for (name, data) in adapter {
            let name = name.strip_prefix(PEFT_PREFIX).unwrap_or(&name).to_string();
            let name = name.replace(".modules_to_save", "");
            if name.contains(".lora_") {
                return Err(bad_input!("{}: `{name}` has no matching lora_A", path.display()));
            }
            tensors.insert(name, data);
        }
        Ok(())
    }
}

/// `model` (adapters attached, see `lora::attach`) with the adapters and heads saved in `dir`
/// put back in place, each parameter keeping its identity (a resumed run's optimizer state is
/// keyed by it).
pub fn restore<M: Module>(model: M, dir: &Path, layout: HfLayout, device: &Device) -> Result<M> {
    let path = dir.join(WEIGHTS_FILE);
    let cpu = crate::device::DeviceSpec::Cpu.device()?;
    let mut tensors = NamedTensors::new();
    for (name, data) in weights::read_file(&path)? {
        let name = name.strip_prefix(PEFT_PREFIX).unwrap_or(&name).to_string();
        let factor = [(".lora_A.weight", "a"), (".lora_B.weight", "b")]
            .into_iter()
            .find_map(|(suffix, f)| name.strip_suffix(suffix).map(|m| (m.to_string(), f)));
        match factor {
            // Stored in `nn.Linear`'s layout, the transpose of Burn's A `[D_in, r]`, B `[r, D_out]`.
            Some((module, f)) => {
                let t = Tensor::<2>::from_data(data, &cpu).transpose();
                tensors.insert(format!("{module}.weight.{ADAPTER_MODULE}.{f}"), t.into_data());
            }
            None => {
                tensors.insert(name, data);
            }
        }
    }
    let model = super::naming::restore_some(model, &mut tensors, layout, device)
        .map_err(|e| bad_input!("{}: {e:#}", path.display()))?;
    if let Some(name) = tensors.keys().next() {
        return Err(bad_input!(
            "{}: `{name}` has no place in the model (its LoRA settings differ from the run's?)",
            path.display()
        ));
    }
    Ok(model)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Writes `model`'s adapters (and the heads it trains in full) into `dir` as `peft` does;
/// `base` is the directory the run started from.
pub fn save<M: Module>(
    model: &M,
    spec: &LoraSpec,
    layout: HfLayout,
    task: Task,
    base: &Path,
    dir: &Path,
) -> Result<()> {
    let (tensors, modules, heads) = peft_tensors(model, layout);
    let config = AdapterConfig {
        peft_type: "LORA".into(),
        task_type: Some(task.name().into()),
        r: spec.rank,
        lora_alpha: spec.alpha,
        lora_dropout: spec.dropout,
        target_modules: Value::from(modules),
        base_model_name_or_path: Some(base.display().to_string()),
        fan_in_fan_out: layout.body_is_conv1d,
        bias: no_bias(),
        modules_to_save: (!heads.is_empty()).then_some(heads),
        use_rslora: false,
        use_dora: false,
        inference_mode: true,
        rest: serde_json::Map::new(),
    };
    crate::json_file::write(&dir.join(CONFIG_FILE), &config)?;
    weights::write_file(&dir.join(WEIGHTS_FILE), &tensors)
}

/// The adapters under `peft`'s names (A and B transposed into `nn.Linear`'s layout), the
/// adapted module names, and the trainable heads (stored whole).
fn peft_tensors<M: Module>(
    model: &M,
    layout: HfLayout,
) -> (NamedTensors, Vec<String>, Vec<String>) {
    struct Collect {
        layout: HfLayout,
        path: Vec<(String, String)>,
        tensors: NamedTensors,
        modules: std::collections::BTreeSet<String>,
        heads: std::collections::BTreeSet<String>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push((name.into(), container_type.into()));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let in_adapter = self.path.iter().position(|(n, _)| n == ADAPTER_MODULE);
            if let Some(at) = in_adapter {
                // `….q_proj.weight` + `lora` + `a` → `….q_proj.lora_A.weight`.
                let (weight_key, _) = self.layout.key(&self.path[..at]);
                let module = weight_key.trim_end_matches(".weight");
                let factor = match self.path.last().map(|(n, _)| n.as_str()) {
                    Some("a") => "lora_A",
                    _ => "lora_B",
                };
                let name = format!("{PEFT_PREFIX}{module}.{factor}.weight");
                self.tensors.insert(name, param.val().transpose().into_data());
                // Full paths, as `peft` resolves "all-linear": with `model.train_layers` only
                // some blocks' q_proj are adapted.
                self.modules.insert(module.to_string());
            } else if param.is_require_grad() {
                let (key, transposed) = self.layout.key(&self.path);
                let value = if transposed { param.val().transpose() } else { param.val() };
                self.tensors.insert(format!("{PEFT_PREFIX}{key}"), value.into_data());
                self.heads.insert(key.split('.').next().unwrap_or(&key).to_string());
            }
        }
    }
    let mut collect = Collect {
        layout,
        path: Vec::new(),
        tensors: NamedTensors::new(),
        modules: Default::default(),
        heads: Default::default(),
    };
    model.visit(&mut collect);
    (collect.tensors, collect.modules.into_iter().collect(), collect.heads.into_iter().collect())
}
