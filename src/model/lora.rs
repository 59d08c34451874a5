//! LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a frozen
//! weight W is adapted as W + (α/r)·A·B, with A `[D_in, r]` and B `[r, D_out]` the only
//! matrices that train. B starts at zero, so the adapted model starts as the base model.
//!
//! The adapters are Burn's own (`LoraAdapter`, attached with `Module::apply_reparameterization`):
//! the optimizer, the gradient all-reduce and `valid()` see them as ordinary parameters, and
//! `Param::val()` composes W + ΔW wherever a weight is read whole (the decoding step). What is
//! ours: A is drawn as `peft` draws it (Kaiming-uniform over the fan-in; Burn's is N(0, 1/r)),
//! so the same config trains alike in both, and training multiplies x·W + (α/r)·(x·A)·B
//! (`forward`) instead of x·(W + ΔW): the composed product needs the weight-shaped gradient
//! of W + ΔW, the full fine-tuning backward that LoRA exists to skip.
//!
//! On disk an adapter is what `peft`'s `save_pretrained` writes (`adapter.rs`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use burn::module::{
    LoraAdapter, Module, ModuleMapper, ModuleVisitor, Param, ParamId, Reparameterizer,
};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use super::naming::{HfLayout, block_index, is_linear_weight};
use crate::bad_input;

/// `[model.lora]`: LoRA instead of full fine-tuning, as `peft.LoraConfig` spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSpec {
    /// r, the adapters' inner width.
    pub rank: usize,
    /// α: the update is scaled by α / r.
    pub alpha: f64,
    /// Dropout on the adapters' input while training.
    pub dropout: f64,
    /// `"all-linear"` (every linear layer of the transformer body; not the LM head or a
    /// score head), or module names as `peft` spells them (`["q_proj", "v_proj"]`).
    pub targets: Targets,
}

impl Default for LoraSpec {
    fn default() -> Self {
        Self { rank: 16, alpha: 32.0, dropout: 0.0, targets: Targets::Preset(ALL_LINEAR.into()) }
    }
}

pub const ALL_LINEAR: &str = "all-linear";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Targets {
    /// Only `"all-linear"`.
    Preset(String),
    Modules(Vec<String>),
}

impl LoraSpec {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Checks what serde cannot; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err("key `model.lora.rank` must be at least 1".into());
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(format!(
                "key `model.lora.alpha` must be a positive number, not {}",
                self.alpha
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "key `model.lora.dropout` must be in [0, 1), not {}",
                self.dropout
            ));
        }
        match &self.targets {
            Targets::Preset(name) if name == ALL_LINEAR => Ok(()),
            Targets::Preset(name) => Err(format!(
                "key `model.lora.targets` = \"{name}\": the one preset is \"{ALL_LINEAR}\"; otherwise list module names, e.g. [\"q_proj\", \"v_proj\"]"
            )),
            Targets::Modules(names) if names.is_empty() => {
                Err("key `model.lora.targets` is empty: name at least one module, or use \"all-linear\"".into())
            }
            Targets::Modules(_) => Ok(()),
        }
    }
}

/// Dropout on the adapters' input, set once per training command (as the precision is).
static DROPOUT_BITS: AtomicU64 = AtomicU64::new(0);

fn set_dropout(p: f64) {
    DROPOUT_BITS.store(p.to_bits(), Ordering::Relaxed);
}

fn dropout() -> f64 {
    f64::from_bits(DROPOUT_BITS.load(Ordering::Relaxed))
}

/// `model` with every parameter frozen and adapters on the linear weights `spec` targets in the
/// body (`layout.body_prefix`), in blocks `first_block..` only (`model.train_layers`); A is
/// drawn from the device's seeded generator. A listed target that names no linear layer is an
/// error that lists the ones there are. Heads a stage trains are unfrozen by the stage.
pub fn attach<M: Module>(
    model: M,
    spec: &LoraSpec,
    layout: HfLayout,
    first_block: usize,
) -> Result<M> {
    set_dropout(spec.dropout);
    let keys = targeted(&model, spec, layout, first_block)?;
    let ids: HashSet<ParamId> = linear_weights(&model, layout)
        .into_iter()
        .filter(|(_, key)| keys.contains(key))
        .map(|(id, _)| id)
        .collect();
    Ok(model.apply_reparameterization(PeftInit { rank: spec.rank, scale: spec.scale(), ids }))
}

/// The checkpoint names (`model.layers.0.self_attn.q_proj.weight`) of the weights `attach`
/// adapts.
fn targeted<M: Module>(
    model: &M,
    spec: &LoraSpec,
    layout: HfLayout,
    first_block: usize,
) -> Result<Vec<String>> {
    let body = format!("{}.", layout.body_prefix);
    let linears: Vec<String> = linear_weights(model, layout)
        .into_iter()
        .map(|(_, key)| key)
        .filter(|key| key.starts_with(&body))
        .collect();
    let module =
        |key: &str| key.trim_end_matches(".weight").rsplit('.').next().unwrap_or("").to_string();
    let chosen: Vec<String> = match &spec.targets {
        Targets::Preset(_) => linears.clone(),
        Targets::Modules(names) => {
            let present: BTreeSet<String> = linears.iter().map(|k| module(k)).collect();
            if let Some(missing) = names.iter().find(|n| !present.contains(n.as_str())) {
                let listed: Vec<&str> = present.iter().map(String::as_str).collect();
                return Err(bad_input!(
                    "key `model.lora.targets`: `{missing}` matches no linear layer of the model\nhint: its linear layers are {}, or use \"{ALL_LINEAR}\"",
                    listed.join(", ")
                ));
            }
            linears.iter().filter(|k| names.contains(&module(k))).cloned().collect()
        }
    };
    Ok(chosen.into_iter().filter(|k| block_index(k).is_none_or(|b| b >= first_block)).collect())
}

/// Attaches Burn's `LoraAdapter` to the chosen weights with `peft`'s initialisation:
/// A = Kaiming-uniform with a = √5, i.e. U(−1/√D_in, 1/√D_in), and B = 0.
struct PeftInit {
    rank: usize,
    scale: f64,
    ids: HashSet<ParamId>,
}

impl Reparameterizer for PeftInit {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        _path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        let adapt = D == 2 && self.ids.contains(&param.id);
        let base = param.set_require_grad(false);
        if !adapt {
            return (base, None);
        }
        let tensor = base.base();
        let (device, [d_in, d_out]) = (tensor.device(), [tensor.dims()[0], tensor.dims()[1]]);
        let bound = 1.0 / (d_in as f64).sqrt();
        let a =
            Tensor::<2>::random([d_in, self.rank], Distribution::Uniform(-bound, bound), &device);
        let b = Tensor::<2>::zeros([self.rank, d_out], &device);
        let adapter =
            LoraAdapter { a: Param::from_tensor(a), b: Param::from_tensor(b), scale: self.scale };
        (base, Some(adapter))
    }
}

/// `x · W + b` for an adapted `linear`: x·W + b + (α/r)·(dropout(x)·A)·B, each product in the
/// working precision (`product`). Called by `precision::linear`.
pub fn forward(
    linear: &Linear,
    adapter: &LoraAdapter,
    x: Tensor<2>,
    product: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
) -> Tensor<2> {
    let y = product(x.clone(), linear.weight.base());
    let y = match &linear.bias {
        Some(bias) => y + bias.val().unsqueeze(),
        None => y,
    };
    let p = dropout();
    let x = match p > 0.0 && x.is_autodiff() {
        true => x.clone() * x.random_like(Distribution::Bernoulli(1.0 - p)) / (1.0 - p),
        false => x,
    };
    let down = product(x, adapter.a.val()); // [N, r]
    y + product(down, adapter.b.val()).mul_scalar(adapter.scale)
}

/// Every `Linear` weight's id and checkpoint name.
fn linear_weights<M: Module>(model: &M, layout: HfLayout) -> Vec<(ParamId, String)> {
    struct Linears {
        layout: HfLayout,
        path: Vec<(String, String)>,
        found: Vec<(ParamId, String)>,
    }
    impl ModuleVisitor for Linears {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push((name.into(), container_type.into()));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if is_linear_weight(&self.path) {
                self.found.push((param.id, self.layout.key(&self.path).0));
            }
        }
    }
    let mut visitor = Linears { layout, path: Vec::new(), found: Vec::new() };
    model.visit(&mut visitor);
    visitor.found
}

/// The same model without its adapters, sharing the base weights with `adapted` (no copy):
/// the reference policy of a LoRA run. `shell` is a freshly made model of the same shape
/// whose (lazy, never drawn) parameters are replaced.
pub fn without_adapters<M: Module>(adapted: &M, shell: M) -> M {
    struct Bases {
        path: Vec<String>,
        tensors: HashMap<String, Tensor<1>>,
    }
    impl ModuleVisitor for Bases {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            // An adapter's own factors sit under the weight's `lora` module.
            if !self.path.iter().any(|p| p == ADAPTER_MODULE) {
                let value = param.val();
                let n = value.dims().iter().product::<usize>();
                self.tensors.insert(self.path.join("."), value.reshape([n]));
            }
        }
    }
    struct Fill {
        path: Vec<String>,
        tensors: HashMap<String, Tensor<1>>,
    }
    impl ModuleMapper for Fill {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let key = self.path.join(".");
            let flat = self.tensors.remove(&key).unwrap_or_else(|| panic!("no `{key}` to share"));
            let dims: [usize; D] = param.lazy_shape().dims();
            Param::initialized(ParamId::new(), flat.reshape(dims))
        }
    }
    let mut bases = Bases { path: Vec::new(), tensors: HashMap::new() };
    adapted.valid().visit(&mut bases);
    shell.map(&mut Fill { path: Vec::new(), tensors: bases.tensors })
}

/// The module name Burn gives a weight's LoRA factors (`….weight.lora.a`).
pub const ADAPTER_MODULE: &str = "lora";

/// A LoRA run: its settings, and the model directory its adapters apply to.
#[derive(Debug, Clone)]
pub struct LoraRun {
    pub spec: LoraSpec,
    pub base: std::path::PathBuf,
}

impl LoraRun {
    /// Writes `model`'s adapters as a `peft` directory for `task`, with the tokenizer files
    /// from `tokenizer_from` (chat, serve and the next stage read them from here).
    pub fn save<M: Module>(
        &self,
        model: &M,
        config: &super::ModelConfig,
        task: super::adapter::Task,
        tokenizer_from: &std::path::Path,
        dir: &std::path::Path,
    ) -> Result<()> {
        super::adapter::save(model, &self.spec, config.layout(), task, &self.base, dir)?;
        crate::data::tokenizer::copy_files(tokenizer_from, dir, config.context_window())
    }
}

/// A trained policy into `dir`: its adapters against `lora`'s base, or (no LoRA) the whole
/// causal LM; the tokenizer files from `tokenizer_from` either way.
pub fn save_policy(
    lora: Option<&LoraRun>,
    model: &super::CausalLm,
    config: &super::ModelConfig,
    tokenizer_from: &std::path::Path,
    dir: &std::path::Path,
) -> Result<()> {
    match lora {
        Some(lora) => lora.save(model, config, super::adapter::Task::CausalLm, tokenizer_from, dir),
        None => super::save_causal_lm(model, config, Some(tokenizer_from), dir),
    }
}

#[cfg(test)]
mod tests {
    use burn::module::ModuleMapper;

    use super::*;
    use crate::model::pretrained::init_causal_lm;
    use crate::model::{CausalLm, PaddedBatch, preset};

    /// Whether any weight of `model` carries an adapter.
    fn has_adapters<M: Module>(model: &M) -> bool {
        struct Any(bool);
        impl ModuleVisitor for Any {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.0 |= name == ADAPTER_MODULE;
            }
        }
        let mut any = Any(false);
        model.visit(&mut any);
        any.0
    }

    /// B drawn at random (it starts at zero), so the adapters change the output.
    struct RandomB(Vec<String>);
    impl ModuleMapper for RandomB {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if self.0.last().is_none_or(|name| name != "b") {
                return param;
            }
            let value = param.val().random_like(Distribution::Normal(0.0, 0.1));
            Param::initialized(param.id, value.require_grad())
        }
    }

    #[test]
    fn training_forward_equals_the_merged_weights_and_the_reference_is_the_base() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        let ad = device.clone().autodiff();
        let tok = crate::data::tokenizer::train_bpe(["a b c d e f g"].into_iter(), 300).unwrap();
        let config = preset::resolve("llama-tiny", &[], &tok, std::path::Path::new(".")).unwrap();
        ad.seed(3);
        let base: CausalLm = init_causal_lm(&config, &ad).unwrap();
        let spec = LoraSpec { rank: 4, ..LoraSpec::default() };
        let adapted = attach(base.clone(), &spec, config.layout(), 0).unwrap();
        assert!(has_adapters(&adapted) && !has_adapters(&base));
        let adapted = adapted.map(&mut RandomB(Vec::new()));

        let logits = |m: &CausalLm, device: &Device| -> Vec<f32> {
            let ids = TensorData::new(vec![5i64, 9, 17, 33, 2, 71], [2, 3]);
            let ids = Tensor::<2, Int>::from_data(ids, device);
            let batch = PaddedBatch::new(Tensor::ones([2, 3], device));
            m.forward(ids, &batch).into_data().try_to_vec::<f32>().unwrap()
        };
        let trained = logits(&adapted, &ad); // x·W + s·(x·A)·B
        let merged = logits(&adapted.valid().materialize(), &device); // x·(W + s·A·B)
        let diff = trained.iter().zip(&merged).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-4, "LoRA product and merged weights differ by {diff}");

        let reference = without_adapters(&adapted, init_causal_lm(&config, &device).unwrap());
        assert!(!has_adapters(&reference));
        let (theirs, ours) = (logits(&base.valid(), &device), logits(&reference, &device));
        assert_eq!(theirs, ours, "the reference is the base model");
        assert_ne!(ours, merged, "and the adapters change the output");
    }
}
