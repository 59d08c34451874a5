//! Hugging Face tensor names ↔ Burn module paths: one table, read in both directions.
//!
//! Module fields are named as `transformers` names them (`h.0.attn.c_attn`), so a path maps
//! to a key by three rules: the decoder (`body.<Family>`) sits under the family's prefix
//! (`transformer.` for GPT-2), norms store `gamma`/`beta` as `weight`/`bias`, and `nn.Linear`
//! weights are stored `[out, in]`, the transpose of Burn's `Linear` — except GPT-2's Conv1D,
//! which is `[in, out]` like Burn.

use anyhow::Result;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::Gradients;

use super::weights::NamedTensors;
use crate::bad_input;

/// How one family lays its tensors out in a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct HfLayout {
    /// Key prefix of the decoder body: `transformer` (GPT-2), `model` (Llama).
    pub body_prefix: &'static str,
    /// Body projections are Conv1D (`[in, out]`), as in GPT-2.
    pub body_is_conv1d: bool,
    /// Module field names stored under another name (`self_attention` → `self`: BERT's names
    /// include a Rust keyword and capitals).
    pub renames: &'static [(&'static str, &'static str)],
}

impl HfLayout {
    /// The checkpoint key for a module path, and whether the stored tensor is the transpose
    /// of Burn's. `path` holds (field, container type) pairs from the module root.
    pub fn key(&self, path: &[(String, String)]) -> (String, bool) {
        let mut names: Vec<&str> = path
            .iter()
            .map(|(name, _)| {
                let renamed = self.renames.iter().find(|(field, _)| field == name);
                renamed.map_or(name.as_str(), |(_, stored)| stored)
            })
            .collect();
        let in_body = names.first() == Some(&"body");
        if in_body {
            // `body.Gpt2.h.0` → `transformer.h.0` (an enum of families adds a level);
            // `body.encoder.layer.0` → `bert.encoder.layer.0`.
            let is_enum = path.get(1).is_some_and(|(_, container)| container.starts_with("Enum"));
            names.splice(0..if is_enum { 2 } else { 1 }, [self.body_prefix]);
        }
        let (last, container) =
            path.last().map(|(n, c)| (n.as_str(), c.as_str())).unwrap_or_default();
        let is_norm = container.ends_with("Norm");
        if let Some(name) = names.last_mut() {
            *name = match (is_norm, last) {
                (true, "gamma") => "weight",
                (true, "beta") => "bias",
                _ => name,
            };
        }
        let transposed = is_linear_weight(path) && !(in_body && self.body_is_conv1d);
        (names.join("."), transposed)
    }
}

/// Replaces every parameter of `module` with the checkpoint tensor of the same name, taking
/// them out of `tensors` (what is left afterwards was not used). All missing tensors and shape
/// mismatches are reported together.
pub fn load_module<M: Module>(
    module: M,
    tensors: &mut NamedTensors,
    layout: HfLayout,
    device: &Device,
) -> Result<M> {
    load_module_keeping(module, tensors, layout, device, &|_| false)
}

/// `load_module`, where parameters whose checkpoint name satisfies `keep` may be missing and
/// then keep their initial value (a fresh head on a pretrained body).
pub fn load_module_keeping<M: Module>(
    module: M,
    tensors: &mut NamedTensors,
    layout: HfLayout,
    device: &Device,
    keep: &dyn Fn(&str) -> bool,
) -> Result<M> {
    Loader::new(layout, tensors, device, keep, false).load(module)
}

/// `load_module` into a module being trained: each parameter keeps its id (which optimizer
/// state is keyed by), device and gradient setting, and only its value changes.
pub fn restore_module<M: Module>(
    module: M,
    tensors: &mut NamedTensors,
    layout: HfLayout,
    device: &Device,
) -> Result<M> {
    Loader::new(layout, tensors, device, &|_| false, true).load(module)
}

/// `restore_module` for the parameters `tensors` has; the others keep their value (a LoRA
/// run's base weights, when its adapters are restored).
pub fn restore_some<M: Module>(
    module: M,
    tensors: &mut NamedTensors,
    layout: HfLayout,
    device: &Device,
) -> Result<M> {
    Loader::new(layout, tensors, device, &|_| true, true).load(module)
}

/// Every parameter of `module` under its checkpoint name, in checkpoint layout.
pub fn named_tensors<M: Module>(module: &M, layout: HfLayout) -> NamedTensors {
    collect(module, layout, None)
}

/// The gradient of every parameter that has one, by checkpoint name and in checkpoint layout
/// (to compare with torch, or to log per-tensor norms).
pub fn named_gradients<M: Module>(module: &M, grads: &Gradients, layout: HfLayout) -> NamedTensors {
    collect(module, layout, Some(grads))
}

/// The transformer block a checkpoint name belongs to (`…layers.N.`, `…layer.N.`, `h.N.`).
pub fn block_index(name: &str) -> Option<usize> {
    let parts: Vec<&str> = name.split('.').collect();
    parts.windows(2).find_map(|w| match w[0] {
        "layers" | "layer" | "h" => w[1].parse().ok(),
        _ => None,
    })
}

/// Every parameter's id with its checkpoint name (to key per-parameter state by name).
pub fn param_names<M: Module>(module: &M, layout: HfLayout) -> Vec<(ParamId, String)> {
    struct Names {
        layout: HfLayout,
        path: Vec<(String, String)>,
        names: Vec<(ParamId, String)>,
    }
    impl ModuleVisitor for Names {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push((name.to_string(), container_type.to_string()));
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.names.push((param.id, self.layout.key(&self.path).0));
        }
    }
    let mut visitor = Names { layout, path: Vec::new(), names: Vec::new() };
    module.visit(&mut visitor);
    visitor.names
}

fn collect<M: Module>(module: &M, layout: HfLayout, grads: Option<&Gradients>) -> NamedTensors {
    let mut collector = Collector { layout, grads, path: Vec::new(), tensors: NamedTensors::new() };
    module.visit(&mut collector);
    collector.tensors
}

struct Loader<'a> {
    layout: HfLayout,
    tensors: &'a mut NamedTensors,
    device: &'a Device,
    keep: &'a dyn Fn(&str) -> bool,
    /// Keep each parameter's identity (see `restore_module`).
    in_place: bool,
    path: Vec<(String, String)>,
    errors: Vec<String>,
}

impl<'a> Loader<'a> {
    fn new(
        layout: HfLayout,
        tensors: &'a mut NamedTensors,
        device: &'a Device,
        keep: &'a dyn Fn(&str) -> bool,
        in_place: bool,
    ) -> Self {
        Self { layout, tensors, device, keep, in_place, path: Vec::new(), errors: Vec::new() }
    }

    fn load<M: Module>(mut self, module: M) -> Result<M> {
        let module = module.map(&mut self);
        match self.errors.is_empty() {
            true => Ok(module),
            false => Err(bad_input!("{}", self.errors.join("\n"))),
        }
    }
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (key, transposed) = self.layout.key(&self.path);
        let expected = param.lazy_shape().dims::<D>().to_vec();
        let Some(data) = self.tensors.remove(&key) else {
            if !(self.keep)(&key) {
                self.errors.push(format!("missing tensor `{key}` (shape {expected:?})"));
            }
            return param;
        };
        let mut stored = data.shape().to_vec();
        if transposed {
            stored.reverse();
        }
        if stored != expected {
            self.errors.push(format!(
                "tensor `{key}` has shape {:?}, the model config implies {:?}",
                data.shape().to_vec(),
                if transposed { expected.iter().rev().copied().collect() } else { expected }
            ));
            return param;
        }
        let tensor = Tensor::<D>::from_data(data, self.device);
        let tensor = if transposed { transposed_contiguous(tensor) } else { tensor };
        match self.in_place {
            true => {
                let id = param.id;
                param.transform_for_load(tensor, id)
            }
            false => Param::from_tensor(tensor),
        }
    }
}

/// Whether a module path (field, container type), as a `ModuleMapper` or `ModuleVisitor` sees
/// it, ends at a `Linear` layer's weight matrix.
pub(super) fn is_linear_weight(path: &[(String, String)]) -> bool {
    path.last().is_some_and(|(field, container)| field == "weight" && container == "Struct:Linear")
}

/// The transpose of `tensor`, laid out contiguously. A transposed view would run products
/// through another kernel path than the contiguous weights a training step leaves, one that
/// rounds differently on some CPUs (MKL on AMD's Zen), so a resumed run would drift from the
/// run it resumes. LibTorch's reshape copies a view it cannot reinterpret.
pub(super) fn transposed_contiguous<const D: usize>(tensor: Tensor<D>) -> Tensor<D> {
    let tensor = tensor.transpose();
    let dims = tensor.dims();
    tensor.reshape([dims.iter().product::<usize>()]).reshape(dims)
}

struct Collector<'a> {
    layout: HfLayout,
    /// Collect these gradients instead of the parameter values.
    grads: Option<&'a Gradients>,
    path: Vec<(String, String)>,
    tensors: NamedTensors,
}

impl ModuleVisitor for Collector<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (key, transposed) = self.layout.key(&self.path);
        let tensor = match self.grads {
            None => param.val(),
            Some(grads) => match param.grad(grads) {
                Some(grad) => grad,
                None => return,
            },
        };
        let tensor = if transposed { tensor.transpose() } else { tensor };
        self.tensors.insert(key, tensor.into_data());
    }
}
