//! `--device cpu|cuda|cuda:N` and `--threads N`, checked before any tensor is made.
#![allow(deprecated)] // Burn 0.22 marks the LibTorch device constructors deprecated; they are the API.

use anyhow::Result;
use burn::prelude::Device;

use crate::bad_input;

/// Where tensors live, as the user named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device `{s}` (expected cpu, cuda or cuda:N)")),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    /// The LibTorch device, or a clear error where it cannot work (a CUDA `Device` built
    /// without a GPU would only panic at its first tensor).
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::libtorch()),
            Self::Cuda(index) => {
                let count =
                    if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
                if index >= count {
                    let found = match count {
                        0 => "no CUDA device is visible to LibTorch".to_string(),
                        n => format!("LibTorch sees {n} CUDA device(s): cuda:0..cuda:{}", n - 1),
                    };
                    return Err(bad_input!(
                        "--device {self}: {found}\nhint: use --device cpu, or check the NVIDIA driver and CUDA_VISIBLE_DEVICES"
                    ));
                }
                Ok(Device::libtorch_cuda(index))
            }
        }
    }
}

/// Whether `device` is LibTorch's CPU (autodiff or not).
pub fn is_cpu(device: &Device) -> bool {
    *device == Device::libtorch()
}

/// Keeps freed tensor memory in the process for the next step instead of handing it back to
/// the kernel. glibc returns large blocks with `munmap`/`brk` trims, so every step's fresh
/// activations and gradients fault their pages in again (PPO on `tiny`: ~14 % of the time in
/// page faults). Blocks up to glibc's 32 MiB ceiling now come from the heap, and the heap is
/// not trimmed below 1 GiB of free space.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes allocator tunables; called before any threads start.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}

/// Sets LibTorch's intra-op thread count (`--threads`); `None` keeps LibTorch's default.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(bad_input!("--threads must be at least 1"));
        }
        tch::set_num_threads(n as i32);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_recognised_with_or_without_autodiff() {
        let cpu = DeviceSpec::Cpu.device().unwrap();
        assert!(is_cpu(&cpu) && is_cpu(&cpu.clone().autodiff()));
    }

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }
}
