//! A c10d process group (PyTorch's `ProcessGroupGloo` / `ProcessGroupNCCL`, from the LibTorch
//! `rlhf` links) behind the few C functions of `c10d_shim.cpp`. Collectives run in place on
//! the LibTorch tensor under a Burn tensor: no copy through the host.
#![allow(deprecated)] // Burn 0.22 marks the LibTorch backend deprecated; it is the one we run on.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use anyhow::{Result, anyhow};
use burn::backend::LibTorch;
use burn::prelude::*;

use super::launch::Launch;

unsafe extern "C" {
    fn rlhf_dist_has_nccl() -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn rlhf_dist_new(
        backend: *const c_char,
        host: *const c_char,
        port: u16,
        is_server: c_int,
        prefix: *const c_char,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    fn rlhf_dist_free(group: *mut c_void);
    fn rlhf_dist_free_error(error: *mut c_char);
    fn rlhf_dist_all_reduce(
        group: *mut c_void,
        tensor: *mut c_void,
        op: c_int,
        error: *mut *mut c_char,
    ) -> c_int;
    fn rlhf_dist_broadcast(
        group: *mut c_void,
        tensor: *mut c_void,
        root: c_int,
        error: *mut *mut c_char,
    ) -> c_int;
}

/// How an all-reduce combines the ranks' values.
#[derive(Debug, Clone, Copy)]
pub enum Reduce {
    Sum,
    Max,
}

/// The job's process group.
pub struct ProcessGroup {
    handle: *mut c_void,
    pub backend: &'static str,
}

// c10d process groups are made to be called from any thread; rlhf calls from one at a time.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

/// Whether the linked LibTorch (and the shim built against it) has NCCL.
pub fn has_nccl() -> bool {
    unsafe { rlhf_dist_has_nccl() != 0 }
}

impl ProcessGroup {
    /// Meets the other ranks at the launcher's store and forms the group (`backend`: `gloo` or
    /// `nccl`). Rank 0 hosts the store unless torchrun's agent already does.
    pub fn connect(launch: &Launch, backend: &'static str) -> Result<Self> {
        let text = |s: &str| CString::new(s).map_err(|_| anyhow!("{s:?} holds a NUL byte"));
        let (name, host, prefix) =
            (text(backend)?, text(&launch.master_addr)?, text(&launch.store_prefix)?);
        let is_server = launch.rank == 0 && !launch.agent_store;
        let mut error = std::ptr::null_mut();
        let handle = unsafe {
            rlhf_dist_new(
                name.as_ptr(),
                host.as_ptr(),
                launch.master_port,
                is_server as c_int,
                prefix.as_ptr(),
                launch.rank as c_int,
                launch.world_size as c_int,
                launch.timeout.as_millis() as i64,
                &mut error,
            )
        };
        if handle.is_null() {
            return Err(anyhow!(
                "rank {} could not join the {backend} group at {}:{}: {}",
                launch.rank,
                launch.master_addr,
                launch.master_port,
                take_message(error)
            ));
        }
        Ok(Self { handle, backend })
    }

    /// Combines `tensor` over every rank; every rank gets the result.
    pub fn all_reduce<const D: usize>(&self, tensor: Tensor<D>, op: Reduce) -> Result<Tensor<D>> {
        let op = match op {
            Reduce::Sum => 0,
            Reduce::Max => 1,
        };
        self.in_place("all-reduce", tensor, |handle, t, error| unsafe {
            rlhf_dist_all_reduce(handle, t, op, error)
        })
    }

    /// Every rank gets `root`'s `tensor`.
    pub fn broadcast<const D: usize>(&self, tensor: Tensor<D>, root: usize) -> Result<Tensor<D>> {
        self.in_place("broadcast", tensor, |handle, t, error| unsafe {
            rlhf_dist_broadcast(handle, t, root as c_int, error)
        })
    }

    /// Sums or maximises `values` over every rank, in f64 (counts and sums of losses), on
    /// `device` (NCCL reduces CUDA tensors only).
    pub fn all_reduce_f64(
        &self,
        values: &mut [f64],
        op: Reduce,
        device: tch::Device,
    ) -> Result<()> {
        let mut tensor = tch::Tensor::from_slice(values).to_device(device);
        let op = match op {
            Reduce::Sum => 0,
            Reduce::Max => 1,
        };
        let mut error = std::ptr::null_mut();
        let handle = tensor.as_mut_ptr() as *mut c_void;
        if unsafe { rlhf_dist_all_reduce(self.handle, handle, op, &mut error) } == 0 {
            return Err(anyhow!("all-reduce: {}", take_message(error)));
        }
        let reduced = Vec::<f64>::try_from(tensor.to_device(tch::Device::Cpu))?;
        values.copy_from_slice(&reduced);
        Ok(())
    }

    /// Runs `call` on a tensor of our own (contiguous, not shared with any other Burn tensor)
    /// so that writing into it in place is safe.
    fn in_place<const D: usize>(
        &self,
        what: &str,
        tensor: Tensor<D>,
        call: impl FnOnce(*mut c_void, *mut c_void, *mut *mut c_char) -> c_int,
    ) -> Result<Tensor<D>> {
        let tch = tensor
            .try_into_primitive::<LibTorch>()
            .map_err(|e| anyhow!("{what} needs a LibTorch tensor: {e:?}"))?;
        // A bucket just concatenated is already ours; anything else is copied first.
        let mut own = match tch.can_mut() && tch.tensor.is_contiguous() {
            true => tch.tensor,
            false => tch.tensor.contiguous().copy(),
        };
        let mut error = std::ptr::null_mut();
        if call(self.handle, own.as_mut_ptr() as *mut c_void, &mut error) == 0 {
            return Err(anyhow!("{what}: {}", take_message(error)));
        }
        Ok(Tensor::from_primitive::<LibTorch>(burn::backend::libtorch::TchTensor::new(own)))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        unsafe { rlhf_dist_free(self.handle) }
    }
}

/// The C++ exception's message, freed.
fn take_message(error: *mut c_char) -> String {
    if error.is_null() {
        return "unknown error".into();
    }
    let message = unsafe { CStr::from_ptr(error) }.to_string_lossy().trim().to_string();
    unsafe { rlhf_dist_free_error(error) };
    message
}
