//! The training stages, one file each.

pub mod sft;
