//! The training stages, one file each.

pub mod reward;
pub mod sft;
