//! The trained pair: the policy and its critic (the value model), updated together by one
//! optimizer as TRL and OpenRLHF do with a shared gradient clip.

use burn::nn::Linear;
use burn::prelude::*;

use super::rollout::ResponseBatch;
use crate::model::layers::linear_tokens;
use crate::model::{CausalLm, ScalarModel};

#[derive(Module, Debug)]
pub struct ActorCritic {
    pub policy: CausalLm,
    pub critic: Critic,
}

#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per run
pub enum Critic {
    /// A value model of its own (InstructGPT initialises it from the reward model).
    Separate(ScalarModel),
    /// A scalar head on the policy's hidden states.
    Shared(Linear),
}

/// What the models say about the response tokens.
pub struct Evaluation {
    /// The policy's logits / temperature `[B·R, V]` at the positions that predict them.
    pub logits: Tensor<2>,
    /// V(state before each token) `[B, R]`.
    pub values: Tensor<2>,
}

impl ActorCritic {
    pub fn evaluate(&self, batch: &ResponseBatch, temperature: f64) -> Evaluation {
        let hidden = self.policy.hidden_from(batch.input_ids.clone(), &batch.padded, batch.from);
        let values = match &self.critic {
            Critic::Separate(_) => self.values(batch),
            Critic::Shared(head) => batch.at_responses(shared_values(head, hidden.clone())),
        };
        Evaluation { logits: batch.logits(&self.policy, hidden, temperature), values }
    }

    /// V(state before each response token) `[B, R]`, without the policy's logits.
    pub fn values(&self, batch: &ResponseBatch) -> Tensor<2> {
        let per_position = match &self.critic {
            Critic::Separate(model) => {
                model.forward_tokens(batch.input_ids.clone(), &batch.padded, batch.from)
            }
            Critic::Shared(head) => shared_values(
                head,
                self.policy.hidden_from(batch.input_ids.clone(), &batch.padded, batch.from),
            ),
        };
        batch.at_responses(per_position)
    }
}

/// A scalar head over the policy's hidden states `[B, W, D]` → `[B, W]`.
fn shared_values(head: &Linear, hidden: Tensor<3>) -> Tensor<2> {
    let [b, t, _] = hidden.dims();
    linear_tokens(head, hidden).reshape([b, t])
}
