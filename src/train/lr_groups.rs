//! Learning rates per parameter: a new head may train faster than the pretrained body
//! (`train.head_lr`), and with layer-wise decay (`train.layer_lr_decay`, as ELECTRA and the
//! BERT fine-tuning studies use it) lower blocks, which hold more general features, move less.
//! Parameters are grouped by their checkpoint names, so one rule covers every family.

use std::collections::HashMap;

use burn::module::ParamId;

use crate::config::train::TrainConfig;
use crate::model::naming::block_index;

/// Where a parameter sits, read from its checkpoint name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// Token and position embeddings, below every block.
    Embeddings,
    /// Transformer block N (0 at the bottom).
    Block(usize),
    /// A freshly initialised output head (`score.*`, `classifier.*`).
    Head,
    /// Above the blocks: final norm, pooler, language-model head.
    Top,
}

impl Group {
    fn of(name: &str) -> Self {
        // Inside a wrapper (the moderation network's `Encoder.…`) the head is not first.
        let parts: Vec<&str> = name.split('.').collect();
        if parts.iter().any(|p| matches!(*p, "score" | "classifier")) {
            return Self::Head;
        }
        match block_index(name) {
            Some(n) => Self::Block(n),
            None if parts.iter().any(|p| p.contains("embed") || *p == "wte" || *p == "wpe") => {
                Self::Embeddings
            }
            None => Self::Top,
        }
    }
}

/// Each parameter's learning rate as a multiple of `train.lr` (parameters at 1 are left out).
pub fn lr_scales(names: &[(ParamId, String)], train: &TrainConfig) -> HashMap<ParamId, f64> {
    let groups: Vec<(ParamId, Group)> =
        names.iter().map(|(id, name)| (*id, Group::of(name))).collect();
    let depth = groups
        .iter()
        .filter_map(|(_, g)| match g {
            Group::Block(n) => Some(n + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let decay = train.layer_lr_decay;
    let head = train.head_lr.map_or(1.0, |head_lr| head_lr / train.lr);
    groups
        .into_iter()
        .map(|(id, group)| {
            let scale = match group {
                Group::Head => head,
                Group::Top => 1.0,
                Group::Block(n) => decay.powi((depth - 1 - n) as i32),
                Group::Embeddings => decay.powi(depth as i32),
            };
            (id, scale)
        })
        .filter(|(_, scale)| *scale != 1.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_every_family_find_their_group() {
        let cases = [
            ("bert.embeddings.word_embeddings.weight", Group::Embeddings),
            ("bert.encoder.layer.5.output.dense.weight", Group::Block(5)),
            ("bert.pooler.dense.weight", Group::Top),
            ("classifier.weight", Group::Head),
            ("Encoder.classifier.weight", Group::Head),
            ("Encoder.body.encoder.layer.2.output.dense.weight", Group::Block(2)),
            ("model.embed_tokens.weight", Group::Embeddings),
            ("model.layers.29.mlp.up_proj.weight", Group::Block(29)),
            ("model.norm.weight", Group::Top),
            ("score.weight", Group::Head),
            ("transformer.wpe.weight", Group::Embeddings),
            ("transformer.h.11.attn.c_attn.bias", Group::Block(11)),
            ("transformer.ln_f.weight", Group::Top),
            ("lm_head.weight", Group::Top),
        ];
        for (name, group) in cases {
            assert_eq!(Group::of(name), group, "{name}");
        }
    }

    #[test]
    fn rates_decay_down_the_stack_and_the_head_has_its_own() {
        let names: Vec<(ParamId, String)> = [
            "bert.embeddings.word_embeddings.weight",
            "bert.encoder.layer.0.output.dense.weight",
            "bert.encoder.layer.1.output.dense.weight",
            "bert.encoder.layer.2.output.dense.weight",
            "bert.pooler.dense.weight",
            "classifier.weight",
        ]
        .iter()
        .map(|n| (ParamId::new(), n.to_string()))
        .collect();
        let train = TrainConfig {
            lr: 1e-4,
            head_lr: Some(1e-3),
            layer_lr_decay: 0.5,
            ..Default::default()
        };
        let scales = lr_scales(&names, &train);
        let scale = |i: usize| scales.get(&names[i].0).copied().unwrap_or(1.0);
        let expected = [0.125, 0.25, 0.5, 1.0, 1.0, 10.0];
        for (i, want) in expected.iter().enumerate() {
            assert!((scale(i) - want).abs() < 1e-12, "{}: {} vs {want}", names[i].1, scale(i));
        }
        assert!(lr_scales(&names, &TrainConfig::default()).is_empty());
    }
}
