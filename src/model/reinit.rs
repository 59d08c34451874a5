//! Re-initialising the top blocks of a pretrained model before fine-tuning: Zhang et al.
//! (2021, "Revisiting Few-sample BERT Fine-tuning") found the top layers of BERT specialised to
//! its pre-training task, and a fresh start for them (and the pooler) steadier on small data.
//! The new values follow `transformers`' `_init_weights`: matrices N(0, initializer_range),
//! biases 0, norm gains 1.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::Distribution;

use super::ModelConfig;
use super::naming::{HfLayout, block_index, param_names};

/// `model` (described by `config`) with its top `blocks` transformer blocks (and a BERT
/// pooler) drawn afresh; each parameter keeps its id and gradient setting. 0 changes nothing.
pub fn reinit_top_blocks<M: Module>(model: M, blocks: usize, config: &ModelConfig) -> M {
    if blocks == 0 {
        return model;
    }
    let (layout, std) = (config.layout(), config.initializer_range());
    let depth = param_names(&model, layout)
        .iter()
        .filter_map(|(_, name)| block_index(name))
        .max()
        .map_or(0, |top| top + 1);
    let mut mapper = Reinit { layout, from: depth.saturating_sub(blocks), std, path: Vec::new() };
    model.map(&mut mapper)
}

struct Reinit {
    layout: HfLayout,
    /// The lowest block drawn afresh.
    from: usize,
    std: f64,
    path: Vec<(String, String)>,
}

impl ModuleMapper for Reinit {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (name, _) = self.layout.key(&self.path);
        let fresh = block_index(&name).is_some_and(|b| b >= self.from) || name.contains("pooler");
        if !fresh {
            return param;
        }
        let (shape, device, id) = (param.lazy_shape(), param.lazy_device(), param.id);
        let value = match (D, name.ends_with("bias")) {
            (1, true) => Tensor::zeros(shape, &device),
            (1, false) => Tensor::ones(shape, &device),
            _ => Tensor::random(shape, Distribution::Normal(0.0, self.std), &device),
        };
        param.transform_for_load(value, id)
    }
}
