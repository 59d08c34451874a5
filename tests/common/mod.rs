//! Shared by the integration tests: fixture paths, the reference Python, comparisons.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::prelude::*;
use rlhf::model::weights::{NamedTensors, read_file};
use rlhf::model::{CausalLm, PaddedBatch};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fixtures written by `scripts/fixtures/make_fixtures.py` (scripts/test.sh runs it).
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("RLHF_FIXTURES")
        .map_or_else(|| root().join("target/fixtures"), PathBuf::from);
    assert!(
        dir.join("cases.json").is_file(),
        "no fixtures in {}: run `scripts/test.sh`, or `.venv/bin/python scripts/fixtures/make_fixtures.py --out target/fixtures`",
        dir.display()
    );
    dir
}

/// Every fixture case directory (all families).
pub fn cases() -> Vec<PathBuf> {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    cases.iter().map(|c| fixtures().join("cases").join(c["name"].as_str().unwrap())).collect()
}

/// One fixture case by name (`gpt2-0`, `llama`, `qwen2`, `mistral`, `smollm`, `llama3`, …).
pub fn case(name: &str) -> PathBuf {
    let dir = fixtures().join("cases").join(name);
    assert!(dir.is_dir(), "no fixture case {name}");
    dir
}

pub fn python() -> PathBuf {
    std::env::var_os("RLHF_PYTHON").map_or_else(|| root().join(".venv/bin/python"), PathBuf::from)
}

/// The Python of TRL 1.12.0's venv (made by `scripts/bench/trl_venv.sh`), if it is there: the
/// TRL parity tests skip without it.
pub fn trl_python() -> Option<PathBuf> {
    let python = root().join("target/bench/ppo/venv/bin/python");
    let installed = std::fs::read_to_string(root().join("target/bench/ppo/venv/.trl-version"));
    match (python.is_file(), installed) {
        (true, Ok(version)) if version.trim() == "1.12.0" => Some(python),
        _ => None,
    }
}

/// Runs `scripts/fixtures/hf_forward.py` on (model dir, io file, out file) triples.
pub fn hf_forward(jobs: &[(PathBuf, PathBuf, PathBuf)]) {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("scripts/fixtures/hf_forward.py"));
    for (model, io, out) in jobs {
        cmd.arg(model).arg(io).arg(out);
    }
    let output = cmd.output().expect("running the reference python");
    assert!(
        output.status.success(),
        "hf_forward.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// LibTorch's random generator is global, and every generation seeds it: in-process tests
/// that generate take turns, so one test's seed cannot land between another's draws.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn cpu() -> Device {
    rlhf::device::DeviceSpec::Cpu.device().unwrap()
}

pub fn read(path: &Path) -> NamedTensors {
    read_file(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

pub fn floats(data: &TensorData) -> Vec<f32> {
    data.clone().convert::<f32>().try_to_vec().unwrap()
}

pub fn tensor<const D: usize>(data: &TensorData, device: &Device) -> Tensor<D> {
    Tensor::from_data(data.clone(), device)
}

pub fn int_tensor<const D: usize>(data: &TensorData, device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(data.clone(), device)
}

/// Largest |a − b| over the elements where `keep` is true.
pub fn max_abs_diff(a: &[f32], b: &[f32], keep: impl Fn(usize) -> bool) -> f32 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, (x, y))| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn rlhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("running rlhf")
}

/// `rlhf model init --preset PRESET --tokenizer TOKENIZER --out OUT EXTRA…`
pub fn init_model(preset: &str, tokenizer: &Path, out: &Path, extra: &[&str]) -> Output {
    let (tokenizer, out) = (tokenizer.to_str().unwrap(), out.to_str().unwrap());
    let mut args =
        vec!["model", "init", "--preset", preset, "--tokenizer", tokenizer, "--out", out];
    args.extend_from_slice(extra);
    rlhf(&args)
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Starts `command`, presses Ctrl-C once stderr shows a line starting with `line_start`, and
/// returns the exit status with everything the run printed to stderr.
pub fn interrupt_at(command: Command, line_start: &str) -> (std::process::ExitStatus, String) {
    signal_at(command, line_start, "INT", 1)
}

/// Starts `command` and, once stderr shows a line starting with `line_start`, sends `signal`
/// (`INT`, `TERM`) `times` times 50 ms apart; returns the exit status and all of stderr.
pub fn signal_at(
    mut command: Command,
    line_start: &str,
    signal: &str,
    times: usize,
) -> (std::process::ExitStatus, String) {
    use std::io::BufRead;
    let mut child = command.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with(line_start) {
            break;
        }
    }
    let (flag, pid) = (format!("-{signal}"), child.id().to_string());
    for k in 0..times {
        if k > 0 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Command::new("kill").args([&flag, &pid]).status().unwrap();
    }
    seen.extend(lines.map(|l| l.unwrap() + "\n"));
    (child.wait().unwrap(), seen)
}

/// `rlhf --threads 1 ARGS…` run in `dir`: tests run side by side, and LibTorch's OpenMP threads
/// spin when more of them than cores compete.
pub fn rlhf_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlhf"));
    cmd.args(["--threads", "1"]).args(args).current_dir(dir);
    cmd
}

/// The recipe of the small moderation classifier the chat and serve tests train: the model
/// directory `modbase` trained (and validated) on `data` for 12 epochs, written to `mod`.
pub fn tiny_moderate_config(data: &str) -> String {
    format!(
        "[model]\nbase = \"modbase\"\n[data]\ntrain = \"{data}\"\nvalid = \"{data}\"\nvalid_fraction = 0.0\nmax_len = 40\n\
         [train]\nepochs = 12\nbatch_size = 8\nlr = 3e-3\nwarmup_steps = 4\neval_every = 0\nlog_every = 20\n\
         [output]\ndir = \"mod\"\n"
    )
}

/// One JSON value a line.
pub fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "exit {:?}:\n{}", out.status.code(), stderr(out));
}

/// A fixture batch and the reference outputs for it.
pub struct Io {
    pub tensors: NamedTensors,
    pub mask: Vec<i64>,
    pub batch: usize,
    pub len: usize,
}

impl Io {
    pub fn read(path: &Path) -> Self {
        let tensors = read(path);
        let shape = tensors["attention_mask"].shape().to_vec();
        let mask = tensors["attention_mask"].clone().convert::<i64>().try_to_vec().unwrap();
        Self { tensors, mask, batch: shape[0], len: shape[1] }
    }

    pub fn inputs(&self, device: &Device) -> (Tensor<2, Int>, PaddedBatch) {
        let ids = int_tensor(&self.tensors["input_ids"], device);
        let mask = int_tensor(&self.tensors["attention_mask"], device);
        (ids, PaddedBatch::new(mask))
    }

    /// Largest logit difference from the reference over real (unpadded) tokens.
    pub fn logit_error(&self, logits: &[f32]) -> f32 {
        let vocab = logits.len() / (self.batch * self.len);
        max_abs_diff(logits, &floats(&self.tensors["logits"]), |i| self.mask[i / vocab] == 1)
    }
}

pub fn logits_of(model: &CausalLm, io: &Io, device: &Device) -> Vec<f32> {
    let (ids, batch) = io.inputs(device);
    model.forward(ids, &batch).into_data().try_to_vec().unwrap()
}

/// Runs `command` to the end and returns its output with its peak resident memory in MiB above
/// that of `rlhf --version`: LibTorch's libraries alone account for ~500 MB of a process that
/// does nothing.
pub fn run_with_peak_memory(mut command: Command) -> (Output, f64) {
    let (output, peak) = peak_rss_kib(&mut command);
    let (_, baseline) = peak_rss_kib(Command::new(env!("CARGO_BIN_EXE_rlhf")).arg("--version"));
    (output, (peak as f64 - baseline as f64) / 1024.0)
}

#[allow(clippy::zombie_processes)] // reaped by wait4, which also reports the peak
fn peak_rss_kib(command: &mut Command) -> (Output, i64) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let mut stdout = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    let stderr = reader.join().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 reaps our own child and fills both.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let output = Output { status: std::process::ExitStatus::from_raw(status), stdout, stderr };
    (output, usage.ru_maxrss)
}
