//! The training stages, one file each.

pub mod moderate;
pub mod ppo;
pub mod reward;
pub mod sft;
