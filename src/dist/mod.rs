//! Data-parallel training across processes on PyTorch's own distributed engine (c10d: Gloo on
//! CPU, NCCL on CUDA), launched by torchrun, srun or mpirun.
//!
//! The job is set up once per process ([`init`]) and then reached through free functions, as
//! `torch.distributed`'s default group is: with one process they all do nothing, so the
//! training stages call them unconditionally. Every rank runs the same program on its share of
//! each global batch; the global batch, the data order and the schedule do not depend on the
//! world size, so N ranks reach the weights one process would.

mod group;
pub mod launch;
mod sync;

use std::sync::OnceLock;

use anyhow::Result;

use crate::bad_input;
use crate::device::DeviceSpec;
pub use group::{ProcessGroup, Reduce, has_nccl};
use launch::Launch;
pub use sync::{all_reduce_gradients, broadcast_parameters, check_replicas};

/// This process's part in a job of several.
struct World {
    launch: Launch,
    group: ProcessGroup,
    /// Where small reductions run (NCCL reduces CUDA tensors only).
    device: tch::Device,
}

static WORLD: OnceLock<World> = OnceLock::new();

/// Joins the job the launcher started, if any, and returns the device this rank trains on:
/// under a launcher `--device cuda` means `cuda:LOCAL_RANK`. Backend: NCCL on CUDA, Gloo on
/// CPU, or `RLHF_DIST_BACKEND`.
pub fn init(device: DeviceSpec) -> Result<DeviceSpec> {
    let Some(launch) = Launch::from_env()? else {
        return Ok(device);
    };
    let device = match device {
        DeviceSpec::Cuda(0) => DeviceSpec::Cuda(launch.local_rank),
        other => other,
    };
    let backend = match (launch.backend.as_deref(), device) {
        (Some("nccl"), _) | (None, DeviceSpec::Cuda(_)) => "nccl",
        _ => "gloo",
    };
    if backend == "nccl" && !has_nccl() {
        return Err(bad_input!(
            "this rlhf was built against a LibTorch without NCCL (or without the CUDA headers)\nhint: set RLHF_DIST_BACKEND=gloo, or rebuild with a CUDA LibTorch"
        ));
    }
    if backend == "nccl" && device == DeviceSpec::Cpu {
        return Err(bad_input!("RLHF_DIST_BACKEND=nccl needs --device cuda"));
    }
    let group = ProcessGroup::connect(&launch, backend)?;
    let tch_device = match (backend, device) {
        ("nccl", DeviceSpec::Cuda(index)) => tch::Device::Cuda(index),
        _ => tch::Device::Cpu,
    };
    let _ = WORLD.set(World { launch, group, device: tch_device });
    Ok(device)
}

fn world() -> Option<&'static World> {
    WORLD.get()
}

/// This process's rank (0 alone).
pub fn rank() -> usize {
    world().map_or(0, |w| w.launch.rank)
}

pub fn world_size() -> usize {
    world().map_or(1, |w| w.launch.world_size)
}

/// Rank 0: the one that writes checkpoints and logs.
pub fn is_main() -> bool {
    rank() == 0
}

/// `warning: MESSAGE` on stderr, from rank 0 only: every rank would say the same.
pub fn warn(message: &str) {
    if is_main() {
        eprintln!("warning: {message}");
    }
}

/// `note: MESSAGE` on stderr, from rank 0 only: something done for the user that they may want
/// to choose themselves.
pub fn note(message: &str) {
    if is_main() {
        eprintln!("note: {message}");
    }
}

/// The job, for messages: `rank 1 of 2 (torchrun, gloo)`.
pub fn describe() -> Option<String> {
    world().map(|w| {
        format!(
            "rank {} of {} ({}, {})",
            w.launch.rank, w.launch.world_size, w.launch.launcher, w.group.backend
        )
    })
}

/// This rank's contiguous share of `items` (all of them alone); shares differ by at most one.
pub fn shard<T>(items: &[T]) -> &[T] {
    let (rank, size, n) = (rank(), world_size(), items.len());
    &items[rank * n / size..(rank + 1) * n / size]
}

/// Sums `values` over every rank, in place.
pub fn sum(values: &mut [f64]) -> Result<()> {
    reduce(values, Reduce::Sum)
}

/// Takes the maximum of `values` over every rank, in place.
pub fn max(values: &mut [f64]) -> Result<()> {
    reduce(values, Reduce::Max)
}

fn reduce(values: &mut [f64], op: Reduce) -> Result<()> {
    match world() {
        Some(w) => w.group.all_reduce_f64(values, op, w.device).map_err(lost),
        None => Ok(()),
    }
}

/// A collective that failed: almost always a rank that died or stopped answering.
fn lost(err: anyhow::Error) -> anyhow::Error {
    let w = world().expect("only collectives fail");
    err.context(format!(
        "rank {} of {}: lost contact with the other ranks (one exited, was killed, or did not answer within RLHF_DIST_TIMEOUT={} s); the last checkpoint on disk is whole\nhint: see the other ranks' errors, then relaunch with --resume",
        w.launch.rank,
        w.launch.world_size,
        w.launch.timeout.as_secs()
    ))
}

/// The group, for the bucketed collectives in `sync`.
fn group() -> Option<&'static ProcessGroup> {
    world().map(|w| &w.group)
}
