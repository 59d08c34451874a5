//! PPO for language models, as InstructGPT trains its policy: rollouts scored by a reward
//! model, a per-token KL penalty toward the SFT policy, GAE, and clipped policy and value
//! losses. The stage that drives it is `train.rs`.

pub mod actor_critic;
pub mod advantage;
pub mod kl;
pub mod loss;
pub mod rollout;
pub mod stats;
pub mod train;
