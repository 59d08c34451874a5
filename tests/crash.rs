//! Crash safety of every training stage: runs that save each step are killed with SIGKILL at
//! random moments (during start-up, steps and saves), stopped by SIGTERM once and twice, and
//! resumed each time. After every kill the output directory is the previous complete
//! checkpoint or the new one, never a partial one, and the chain of resumed runs ends with the
//! weights and metrics of a run that was never interrupted.
//!
//! `RLHF_KILLS` sets the SIGKILLs per stage (default 4; `scripts/stress.sh` uses 50) and
//! `RLHF_KILL_SEED` their timing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

struct Workspace {
    dir: PathBuf,
}

fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(Workspace::new)
}

const ANSWERS: [&str; 4] = ["Yes, gladly.", "No.", "Paris is in France.", "The sky is blue."];

impl Workspace {
    /// Data for every stage, a tokenizer, and a short SFT run and reward model to start from.
    fn new() -> Self {
        let dir = root().join("target/test-work/crash");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ws = Self { dir };
        let prompt = |i: usize| format!("Question {i}: is this right?");
        let sft: Vec<Value> =
            (0..64).map(|i| json!({"prompt": prompt(i), "completion": ANSWERS[i % 4]})).collect();
        let prefs: Vec<Value> = (0..64)
            .map(|i| json!({"prompt": prompt(i), "chosen": ANSWERS[i % 2], "rejected": ANSWERS[2 + i % 2]}))
            .collect();
        let prompts: Vec<Value> = (0..64).map(|i| json!({"prompt": prompt(i)})).collect();
        let texts: Vec<Value> = (0..64)
            .map(|i| json!({"text": format!("{} {}", prompt(i), ANSWERS[i % 4]), "HR": i % 2, "SH": (i / 2) % 2}))
            .collect();
        for (name, rows) in
            [("sft", &sft), ("prefs", &prefs), ("prompts", &prompts), ("texts", &texts)]
        {
            write_jsonl(&ws.path(&format!("{name}.jsonl")), rows);
        }
        let tokenizer =
            ["tokenizer", "train", "--data", "sft.jsonl", "--vocab-size", "300", "--out", "tok"];
        assert_ok(&ws.run(&tokenizer));
        for (stage, config) in CONFIGS {
            std::fs::write(ws.path(&format!("{stage}.toml")), config).unwrap();
        }
        let base = ["--set", "output.dir=runs/base", "--set", "train.save_every=0"];
        assert_ok(&ws.run(&[&["sft", "train", "--config", "sft.toml"][..], &base].concat()));
        let rm = ["--set", "output.dir=runs/rm", "--set", "train.save_every=0"];
        assert_ok(&ws.run(&[&["reward", "train", "--config", "reward.toml"][..], &rm].concat()));
        ws
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        rlhf_in(&self.dir, args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

/// Every stage saves after each step, so kills land in saves as often as in steps.
const CONFIGS: [(&str, &str); 7] = [
    (
        "sft",
        r#"
[model]
init = "tiny"
tokenizer = "tok"
[data]
train = "sft.jsonl"
valid_fraction = 0.1
max_len = 48
[train]
max_steps = 30
batch_size = 8
lr = 3e-3
warmup_steps = 3
eval_every = 10
save_every = 1
log_every = 1
[samples]
count = 1
max_new_tokens = 8
"#,
    ),
    (
        "reward",
        r#"
[model]
base = "runs/base"
[data]
train = "prefs.jsonl"
valid_fraction = 0.1
max_len = 48
[train]
max_steps = 30
batch_size = 8
lr = 1e-3
eval_every = 10
save_every = 1
log_every = 1
"#,
    ),
    (
        "moderate",
        r#"
[model]
base = "runs/base"
[data]
train = "texts.jsonl"
valid_fraction = 0.2
max_len = 48
[train]
max_steps = 30
batch_size = 8
lr = 1e-3
eval_every = 10
save_every = 1
log_every = 1
"#,
    ),
    (
        "ppo",
        r#"
[model]
policy = "runs/base"
reward = "runs/rm"
[data]
prompts = "prompts.jsonl"
max_prompt_len = 24
[rollout]
max_new_tokens = 8
[ppo]
mini_batch_size = 4
[train]
max_steps = 12
batch_size = 8
lr = 3e-4
save_every = 1
log_every = 1
"#,
    ),
    (
        "dpo",
        r#"
[model]
base = "runs/base"
[data]
train = "prefs.jsonl"
valid_fraction = 0.1
max_len = 48
[train]
max_steps = 30
batch_size = 8
lr = 1e-3
eval_every = 10
save_every = 1
log_every = 1
"#,
    ),
    (
        "grpo",
        r#"
[model]
base = "runs/base"
[data]
prompts = "prompts.jsonl"
max_prompt_len = 24
[rollout]
max_new_tokens = 8
[[rewards]]
model = "runs/rm"
[grpo]
num_generations = 4
beta = 0.04
num_iterations = 2
[train]
max_steps = 12
batch_size = 4
lr = 3e-4
save_every = 1
log_every = 1
"#,
    ),
    (
        "kto",
        r#"
[model]
base = "runs/base"
[data]
train = "prefs.jsonl"
valid_fraction = 0.1
max_len = 48
[train]
max_steps = 30
batch_size = 8
lr = 1e-3
eval_every = 10
save_every = 1
log_every = 1
"#,
    ),
];

/// A small deterministic generator for kill times.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One stage's kill test, in its own output directories.
struct Chain<'a> {
    ws: &'a Workspace,
    stage: &'static str,
    out: String,
}

impl Chain<'_> {
    fn args(&self, out: &str, resume: bool) -> Vec<String> {
        let config = format!("{}.toml", self.stage);
        let mut args: Vec<String> =
            [self.stage, "train", "--config", &config, "--set"].map(String::from).to_vec();
        args.push(format!("output.dir={out}"));
        if resume {
            args.push("--resume".into());
        }
        args
    }

    fn start(&self, out: &str) -> Command {
        let resume = self.ws.path(out).join("state/trainer.json").is_file();
        let args = self.args(out, resume);
        self.ws.command(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The output directory after a kill: absent (no save yet) or a whole checkpoint that
    /// `rlhf model inspect` reads, with a readable state; returns its step.
    fn check_whole(&self, context: &str) -> Option<u64> {
        let dir = self.ws.path(&self.out);
        if !dir.exists() {
            return None;
        }
        let inspect = self.ws.run(&["model", "inspect", "--model", &self.out]);
        assert!(inspect.status.success(), "{context}: {}", stderr(&inspect));
        let state = std::fs::read_to_string(dir.join("state/trainer.json"))
            .unwrap_or_else(|e| panic!("{context}: state/trainer.json: {e}"));
        let state: Value = serde_json::from_str(&state).unwrap();
        for file in ["rlhf.json", "metrics.jsonl", "state/optimizer.safetensors"] {
            assert!(dir.join(file).is_file(), "{context}: no {file}");
        }
        Some(state["step"].as_u64().unwrap())
    }

    /// Strays a killed save left beside the output directory.
    fn strays(&self) -> Vec<String> {
        let prefix = format!(".{}.", self.out.trim_start_matches("runs/"));
        std::fs::read_dir(self.ws.path("runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(&prefix))
            .collect()
    }

    /// Sends SIGTERM after the first logged step (twice with `twice`): exit 143 and a whole
    /// checkpoint (after one signal, the step it stopped at).
    fn sigterm(&self, twice: bool) {
        let times = if twice { 2 } else { 1 };
        let (status, seen) = signal_at(self.start(&self.out), "step ", "TERM", times);
        assert_eq!(status.code(), Some(143), "{}: SIGTERM (twice: {twice}):\n{seen}", self.stage);
        let step = self.check_whole("after SIGTERM");
        if !twice {
            assert!(seen.contains("--resume"), "{seen}");
            assert!(step.is_some(), "a single SIGTERM saves before exiting");
        }
    }
}

fn compare_weights(a: &Path, b: &Path, tolerance: f32) {
    let (a, b) = (read(a), read(b));
    assert_eq!(a.len(), b.len());
    for (name, expected) in &a {
        let diff = max_abs_diff(&floats(&b[name]), &floats(expected), |_| true);
        assert!(diff <= tolerance, "{name}: the resumed chain differs by {diff}");
    }
}

/// The step of every metrics line: none lost, none repeated.
fn logged_steps(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect()
}

/// `transformers` loads a checkpoint a kill left (every weight present and readable).
fn assert_transformers_loads(dir: &Path) {
    let script = "import sys, transformers as t\n\
        c = t.AutoConfig.from_pretrained(sys.argv[1])\n\
        auto = t.AutoModelForSequenceClassification if c.architectures[0].endswith('ForSequenceClassification') else t.AutoModelForCausalLM\n\
        _, info = auto.from_pretrained(sys.argv[1], output_loading_info=True)\n\
        assert not info['missing_keys'] and not info['mismatched_keys'], info";
    let out = Command::new(python()).args(["-c", script]).arg(dir).output().unwrap();
    assert_ok(&out);
}

/// The whole test for one stage: a straight run, then SIGTERM once and twice, then random
/// SIGKILLs each followed by `--resume` (a chain that finishes is compared and started over),
/// and the last chain resumed to the end and compared.
fn survives_kills(stage: &'static str, files: &[&str], tolerance: f32) {
    let ws = workspace();
    let straight = format!("runs/{stage}-straight");
    let chain = Chain { ws, stage, out: format!("runs/{stage}-killed") };
    let began = Instant::now();
    let args = chain.args(&straight, false);
    assert_ok(&ws.run(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let straight_ms = began.elapsed().as_millis() as u64;

    let finished = |context: &str| {
        for file in files {
            compare_weights(
                &ws.path(&straight).join(file),
                &ws.path(&chain.out).join(file),
                tolerance,
            );
        }
        assert_eq!(
            logged_steps(&ws.path(&chain.out)),
            logged_steps(&ws.path(&straight)),
            "{context}"
        );
        assert_eq!(chain.strays(), Vec::<String>::new(), "{context}: strays left");
    };

    chain.sigterm(false);
    chain.sigterm(true);

    let kills = env_number("RLHF_KILLS", 4);
    let seed = env_number("RLHF_KILL_SEED", 1);
    let mut rng = Lcg(seed ^ stage.len() as u64);
    let (mut mid_save, mut chains, mut before_first_save) = (0, 0, 0);
    for kill in 0..kills {
        let mut child =
            chain.start(&chain.out).stderr(std::process::Stdio::null()).spawn().unwrap();
        let delay = Duration::from_millis(rng.below(straight_ms));
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(status) = child.try_wait().unwrap() {
            // Finished before the kill: a whole chain to compare, then a new one.
            assert!(status.success(), "{stage}: chain ended with {status}");
            finished(&format!("{stage}: chain {chains}"));
            chains += 1;
            std::fs::remove_dir_all(ws.path(&chain.out)).unwrap();
            continue;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        mid_save += usize::from(chain.strays().iter().any(|s| s.contains(".saving-")));
        let context = format!("{stage}: kill {kill} after {delay:?} (seed {seed})");
        before_first_save += usize::from(chain.check_whole(&context).is_none());
    }
    if ws.path(&chain.out).exists() {
        assert_transformers_loads(&ws.path(&chain.out));
    }
    let resumed = chain.start(&chain.out).output().unwrap();
    assert_ok(&resumed);
    finished(&format!("{stage}: last chain"));
    eprintln!(
        "{stage}: {kills} SIGKILLs (seed {seed}): {mid_save} in the middle of a save, \
         {before_first_save} before the first save; {} chains compared; straight run {straight_ms} ms",
        chains + 1
    );
}

#[test]
fn sft_survives_kills() {
    survives_kills("sft", &["model.safetensors"], 1e-6);
}

#[test]
fn reward_survives_kills() {
    survives_kills("reward", &["model.safetensors"], 1e-6);
}

#[test]
fn moderate_survives_kills() {
    survives_kills("moderate", &["model.safetensors"], 1e-6);
}

#[test]
fn dpo_survives_kills() {
    survives_kills("dpo", &["model.safetensors", "state/reference_logps.safetensors"], 1e-6);
}

#[test]
fn kto_survives_kills() {
    survives_kills("kto", &["model.safetensors", "state/reference_logps.safetensors"], 1e-6);
}

#[test]
fn grpo_survives_kills() {
    survives_kills("grpo", &["model.safetensors"], 1e-5);
}

#[test]
fn ppo_survives_kills() {
    survives_kills("ppo", &["model.safetensors", "value/model.safetensors"], 1e-5);
}

/// A tmpfs mounted for one test (needs root; `None` where mounting is not allowed), unmounted
/// when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Self> {
        std::fs::create_dir_all(&dir).unwrap();
        let options = format!("size={size}");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }

    fn remount(&self, options: &str) {
        let options = format!("remount,{options}");
        let status = Command::new("mount").args(["-o", &options]).arg(&self.0).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A save into a full filesystem fails with exit 1 and a message, keeps the previous checkpoint
/// whole and leaves no strays; once there is space `--resume` ends where an uninterrupted run
/// does. A read-only output directory is refused before training starts.
#[test]
fn a_full_disk_or_read_only_output_fails_cleanly_and_resumes() {
    let ws = workspace();
    // Room for one checkpoint of the `tiny` model (1.7 MB) but not for the next beside it.
    let Some(disk) = Tmpfs::mount(ws.path("small-disk"), "2560k") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let sft = |sets: &[&str], extra: &[&str]| {
        let mut args = vec!["sft", "train", "--config", "sft.toml"];
        for set in sets {
            args.extend(["--set", set]);
        }
        ws.run(&[&args[..], extra].concat())
    };
    let sets = ["output.dir=small-disk/run", "train.save_every=10"];
    let full = sft(&sets, &[]);
    let err = stderr(&full);
    eprintln!("{err}");
    assert_eq!(full.status.code(), Some(1), "{err}");
    assert!(err.contains("sft: step 20 could not be saved"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("small-disk/run keeps the checkpoint of step 10"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    let kept: Value = serde_json::from_slice(
        &std::fs::read(ws.path("small-disk/run/state/trainer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept["step"], 10);
    assert_ok(&ws.run(&["model", "inspect", "--model", "small-disk/run"]));
    let entries: Vec<_> = std::fs::read_dir(&disk.0).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the checkpoint is left");

    disk.remount("size=16m");
    assert_ok(&sft(&sets, &["--resume"]));
    assert_ok(&sft(&["output.dir=runs/disk-straight", "train.save_every=10"], &[]));
    compare_weights(
        &ws.path("runs/disk-straight/model.safetensors"),
        &ws.path("small-disk/run/model.safetensors"),
        1e-6,
    );

    disk.remount("ro");
    let refused = sft(&["output.dir=small-disk/other"], &[]);
    let err = stderr(&refused);
    eprintln!("{err}");
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("small-disk: cannot write a checkpoint here"), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
}
