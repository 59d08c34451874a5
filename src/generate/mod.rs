//! Generation: batched sampling with a KV cache (for `rlhf generate`, PPO rollouts and chat),
//! and continuous batching with per-row sampling (for `rlhf serve`).

pub mod engine;
pub mod live_batch;
pub mod row_sampler;
pub mod sampling;
pub mod text_stream;

pub use engine::{Conversation, Finish, Generation, Generator};
pub use live_batch::LiveBatch;
pub use row_sampler::{RowSampler, RowSampling};
pub use sampling::{Choice, SamplingConfig};
pub use text_stream::TextStream;
