//! The training stages, one file each.

pub mod moderate;
pub mod reward;
pub mod sft;
