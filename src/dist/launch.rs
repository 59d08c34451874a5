//! Where this process stands in a job, as the launcher told it through the environment:
//! torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), Slurm's `srun`
//! (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`) or Open MPI's `mpirun`
//! (`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_LOCAL_RANK`). None of
//! them: one process, as always.

use std::time::Duration;

use anyhow::Result;

use crate::bad_input;

/// torch.distributed's default port, for launchers that do not name one.
const DEFAULT_PORT: u16 = 29500;
/// How long a collective (or the rendezvous) may wait on a peer before the run gives up.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// One process's place in a multi-process job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes on this machine: the GPU it takes.
    pub local_rank: usize,
    /// Who set the job up, for messages.
    pub launcher: &'static str,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already hosts the store: every rank connects to it as a client.
    pub agent_store: bool,
    /// Keys of this attempt in the store (torchrun restarts workers under a new one).
    pub store_prefix: String,
    pub timeout: Duration,
    /// `RLHF_DIST_BACKEND`, when set: `gloo` or `nccl`.
    pub backend: Option<String>,
}

impl Launch {
    /// Reads the process environment; `None` for a single process.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`Launch::from_env`], with `var` standing for the environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let number = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|v| {
                    v.trim().parse().map_err(|_| {
                        bad_input!("environment variable {name}={v:?} is not a whole number")
                    })
                })
                .transpose()
        };
        let (launcher, [rank_var, size_var, local_var]) = if var("WORLD_SIZE").is_some() {
            ("torchrun", ["RANK", "WORLD_SIZE", "LOCAL_RANK"])
        } else if var("SLURM_NTASKS").is_some() && var("SLURM_PROCID").is_some() {
            ("srun", ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"])
        } else if var("OMPI_COMM_WORLD_SIZE").is_some() {
            let vars =
                ["OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"];
            ("mpirun", vars)
        } else {
            return Ok(None);
        };
        let world_size = number(size_var)?.unwrap_or(1);
        if world_size <= 1 {
            return Ok(None);
        }
        let rank = number(rank_var)?.ok_or_else(|| {
            bad_input!("{launcher} set {size_var}={world_size} but not {rank_var}")
        })?;
        if rank >= world_size {
            return Err(bad_input!("{rank_var}={rank} is not below {size_var}={world_size}"));
        }
        let local_rank = number(local_var)?.unwrap_or(0);
        let master_addr = match var("MASTER_ADDR") {
            Some(addr) => addr,
            None => default_master(launcher, &var).ok_or_else(|| {
                bad_input!(
                    "{launcher} started {world_size} processes but MASTER_ADDR is not set\nhint: export MASTER_ADDR=<the first node's address> (and MASTER_PORT) before launching"
                )
            })?,
        };
        let master_port = match var("MASTER_PORT") {
            Some(port) => port.trim().parse().map_err(|_| {
                bad_input!("environment variable MASTER_PORT={port:?} is not a port number")
            })?,
            None => DEFAULT_PORT,
        };
        let timeout = match number("RLHF_DIST_TIMEOUT")? {
            Some(seconds) if seconds > 0 => Duration::from_secs(seconds as u64),
            Some(_) => {
                return Err(bad_input!("RLHF_DIST_TIMEOUT must be a positive number of seconds"));
            }
            None => DEFAULT_TIMEOUT,
        };
        let backend = var("RLHF_DIST_BACKEND").map(|b| b.trim().to_ascii_lowercase());
        if let Some(b) = backend.as_deref().filter(|b| !matches!(*b, "gloo" | "nccl")) {
            return Err(bad_input!("RLHF_DIST_BACKEND={b:?}: expected gloo or nccl"));
        }
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True");
        let attempt = var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            launcher,
            master_addr,
            master_port,
            agent_store,
            store_prefix: format!("rlhf/attempt_{attempt}"),
            timeout,
            backend,
        }))
    }
}

/// Where the store lives when `MASTER_ADDR` is not set: the first node of a Slurm step, or
/// this machine when every `mpirun` process runs on it.
fn default_master(launcher: &str, var: &impl Fn(&str) -> Option<String>) -> Option<String> {
    match launcher {
        "srun" => var("SLURM_STEP_NODELIST")
            .or_else(|| var("SLURM_JOB_NODELIST"))
            .map(|list| first_host(&list)),
        "mpirun" => (var("OMPI_COMM_WORLD_LOCAL_SIZE") == var("OMPI_COMM_WORLD_SIZE"))
            .then(|| "127.0.0.1".to_string()),
        _ => None,
    }
}

/// The first host of a Slurm node list: `gpu[03-05,07],cpu1` → `gpu03`.
fn first_host(list: &str) -> String {
    let first = list.split(',').next().unwrap_or(list);
    match first.split_once('[') {
        Some((stem, ranges)) => {
            let start = ranges.split(['-', ',', ']']).next().unwrap_or("");
            format!("{stem}{start}")
        }
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        Launch::from_vars(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn torchrun_slurm_and_mpirun_are_read() {
        let torchrun = launch(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "1234"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((torchrun.rank, torchrun.world_size, torchrun.local_rank), (3, 4, 1));
        assert_eq!((torchrun.master_addr.as_str(), torchrun.master_port), ("10.0.0.1", 1234));
        assert!(torchrun.agent_store);
        assert_eq!(torchrun.store_prefix, "rlhf/attempt_2");

        let srun = launch(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_STEP_NODELIST", "gpu[03-05,07]"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((srun.rank, srun.world_size, srun.local_rank), (5, 8, 1));
        assert_eq!((srun.master_addr.as_str(), srun.master_port), ("gpu03", DEFAULT_PORT));
        assert!(!srun.agent_store);

        let mpirun = launch(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((mpirun.rank, mpirun.master_addr.as_str()), (1, "127.0.0.1"));
    }

    #[test]
    fn one_process_without_a_launcher_or_with_a_world_of_one() {
        assert_eq!(launch(&[]).unwrap(), None);
        assert_eq!(launch(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap(), None);
        assert_eq!(launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).unwrap(), None);
    }

    #[test]
    fn a_broken_environment_is_named() {
        let error = |vars| launch(vars).unwrap_err().to_string();
        assert!(error(&[("RANK", "x"), ("WORLD_SIZE", "2")]).contains("RANK=\"x\""));
        assert!(error(&[("RANK", "2"), ("WORLD_SIZE", "2")]).contains("not below"));
        assert!(
            error(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")])
                .contains("MASTER_ADDR is not set")
        );
        let vars = [("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")];
        let with = |extra: (&'static str, &'static str)| {
            let mut all = vars.to_vec();
            all.push(extra);
            launch(&all).unwrap_err().to_string()
        };
        assert!(with(("RLHF_DIST_BACKEND", "mpi")).contains("expected gloo or nccl"));
        assert!(with(("MASTER_PORT", "99999")).contains("MASTER_PORT"));
    }
}
