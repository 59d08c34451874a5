//! GRPO: group-relative policy optimisation, scored by reward programs.

pub mod program;
