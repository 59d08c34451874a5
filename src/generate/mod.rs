//! Generation: batched sampling with a KV cache (for `rlhf generate`, PPO rollouts and chat).

pub mod engine;
pub mod sampling;

pub use engine::{Conversation, Finish, Generation, Generator};
pub use sampling::{Choice, SamplingConfig};
