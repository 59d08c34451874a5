//! The demo's task with a gold judge (`rlhf demo`, driven by `scripts/demo.sh`): questions
//! about common facts with an instruction on the answer's form, split into train and held-out
//! prompts; a program that judges answers, ranks sampled answers into InstructGPT's K-wise
//! comparisons, and measures each policy where the reward model cannot flatter it; the judge
//! also serves as a reward program for `rlhf grpo`.

pub mod facts;
pub mod judge;
pub mod rank;
pub mod reward_program;
pub mod summary;
pub mod task;
