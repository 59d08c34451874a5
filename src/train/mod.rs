//! Training machinery the stages share: optimizer, schedule, clipping, data order, Ctrl-C,
//! and the resumable state a checkpoint carries.

pub mod adamw;
pub mod grad_norm;
pub mod interrupt;
pub mod lr_groups;
pub mod run;
pub mod schedule;
pub mod shuffle;
pub mod start;
pub mod state;
pub mod step;
