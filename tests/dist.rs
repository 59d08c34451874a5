//! Data-parallel training with two processes on PyTorch's Gloo backend (loopback, one thread
//! per rank), launched the way torchrun launches them: SFT, reward, moderation, DPO and KTO
//! training on two ranks end with the weights of one process given the same global batch;
//! PPO on two ranks finishes with the same weights on both; a rank that dies ends the other
//! with a message; a two-rank run stopped by SIGTERM resumes, on two ranks or one, to the
//! weights of an uninterrupted run.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
    /// Data for every stage, a tokenizer, and an SFT model and reward model to start from.
    fn new() -> Self {
        let dir = root().join("target/test-work/dist");
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
        assert_ok(&rlhf_in(&ws.dir, &tokenizer).output().unwrap());
        for (stage, config) in CONFIGS {
            std::fs::write(ws.path(&format!("{stage}.toml")), config).unwrap();
        }
        let base = ["sft", "train", "--config", "sft.toml", "--set", "output.dir=runs/base"];
        assert_ok(&rlhf_in(&ws.dir, &base).output().unwrap());
        let rm = ["reward", "train", "--config", "reward.toml", "--set", "output.dir=runs/rm"];
        assert_ok(&rlhf_in(&ws.dir, &rm).output().unwrap());
        ws
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `rlhf STAGE train --config STAGE.toml --set output.dir=runs/OUT ARGS…`
    fn train_args(stage: &str, out: &str, extra: &[&str]) -> Vec<String> {
        let config = format!("{stage}.toml");
        let out = format!("output.dir=runs/{out}");
        let args = [stage, "train", "--config", &config, "--set", &out];
        args.iter().chain(extra).map(|s| s.to_string()).collect()
    }

    /// One process.
    fn single(&self, stage: &str, out: &str, extra: &[&str]) -> Output {
        let args = Self::train_args(stage, out, extra);
        rlhf_in(&self.dir, &args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap()
    }

    /// Two ranks started as torchrun starts them (its environment variables), stderr piped.
    fn ranks(&self, stage: &str, out: &str, extra: &[&str]) -> Vec<Child> {
        let args = Self::train_args(stage, out, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let port = free_port().to_string();
        (0..2)
            .map(|rank| {
                rlhf_in(&self.dir, &args)
                    .envs([
                        ("RANK", rank.to_string().as_str()),
                        ("LOCAL_RANK", rank.to_string().as_str()),
                        ("WORLD_SIZE", "2"),
                        ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", port.as_str()),
                        ("RLHF_DIST_TIMEOUT", "60"),
                    ])
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect()
    }

    fn metrics(&self, run: &str) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.path(&format!("runs/{run}/metrics.jsonl"))).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// Both ranks' exit status and stderr.
fn wait_all(ranks: Vec<Child>) -> Vec<(std::process::ExitStatus, String)> {
    ranks
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
        })
        .collect()
}

fn assert_all_ok(results: &[(std::process::ExitStatus, String)]) {
    for (rank, (status, stderr)) in results.iter().enumerate() {
        assert!(status.success(), "rank {rank} failed ({status}):\n{stderr}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Largest difference between two checkpoints' weights.
fn weight_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (read(&a.join("model.safetensors")), read(&b.join("model.safetensors")));
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(name, t)| max_abs_diff(&floats(t), &floats(&b[name]), |_| true))
        .fold(0.0, f32::max)
}

/// Rows that do not split evenly (7 = 3 + 4) and two micro-batches a step.
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
max_steps = 12
batch_size = 7
grad_accum = 2
lr = 3e-3
warmup_steps = 3
eval_every = 6
save_every = 1
log_every = 1
[samples]
count = 0
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
max_steps = 10
batch_size = 7
grad_accum = 2
lr = 1e-3
eval_every = 5
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
max_steps = 10
batch_size = 7
lr = 1e-3
eval_every = 5
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
max_steps = 4
batch_size = 10
lr = 3e-4
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
max_steps = 10
batch_size = 7
grad_accum = 2
lr = 1e-3
eval_every = 5
log_every = 1
"#,
    ),
    (
        "grpo",
        r#"
[model]
base = "runs/base"
reference = "runs/base"
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
scale_rewards = "batch"
micro_batch_size = 6
[train]
max_steps = 3
batch_size = 6
lr = 3e-4
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
max_steps = 10
batch_size = 7
grad_accum = 2
lr = 1e-3
eval_every = 5
log_every = 1
"#,
    ),
];

#[test]
fn two_ranks_train_the_weights_one_process_does() {
    let ws = workspace();
    for stage in ["sft", "reward", "moderate", "dpo", "kto"] {
        assert_ok(&ws.single(stage, &format!("{stage}-one"), &[]));
        let results = wait_all(ws.ranks(stage, &format!("{stage}-two"), &[]));
        assert_all_ok(&results);
        assert!(!results[1].1.contains("step "), "rank 1 logs no steps:\n{}", results[1].1);
        let (one, two) =
            (ws.path(&format!("runs/{stage}-one")), ws.path(&format!("runs/{stage}-two")));
        let diff = weight_diff(&one, &two);
        eprintln!("{stage}: two ranks end {diff:e} from one process");
        assert!(diff <= 1e-5, "{stage}: two ranks end {diff} from one process");
        let (one, two) = (ws.metrics(&format!("{stage}-one")), ws.metrics(&format!("{stage}-two")));
        assert_eq!(one.len(), two.len());
        for (a, b) in one.iter().zip(&two) {
            assert_eq!(a["step"], b["step"]);
            if let (Some(x), Some(y)) = (a["loss"].as_f64(), b["loss"].as_f64()) {
                assert!((x - y).abs() < 1e-4, "{stage} step {}: loss {x} vs {y}", a["step"]);
            }
            assert_eq!(a.get("tokens"), b.get("tokens"), "{stage}: tokens of every rank counted");
        }
    }
}

#[test]
fn ppo_on_two_ranks_keeps_the_ranks_identical() {
    let ws = workspace();
    assert_ok(&ws.single("ppo", "ppo-one", &[]));
    // A run ends with a cross-rank checksum of the weights: success means equal replicas.
    let results = wait_all(ws.ranks("ppo", "ppo-two", &[]));
    assert_all_ok(&results);
    let (one, two) = (ws.metrics("ppo-one"), ws.metrics("ppo-two"));
    assert_eq!(one.len(), two.len());
    for (a, b) in one.iter().zip(&two) {
        assert_eq!(a["step"], b["step"]);
        assert_eq!(a["beta"], b["beta"], "a fixed β is every rank's");
        for key in ["score", "kl", "policy_loss", "value_loss", "explained_variance"] {
            assert!(b[key].as_f64().is_some_and(f64::is_finite), "{key}: {b}");
        }
    }
    // Rank 0 rolls out as one process does for its half of the prompts: the first iteration's
    // statistics are over all ten rollouts, so they differ, but only by sampling.
    assert!(ws.path("runs/ppo-two/model.safetensors").is_file());
}

#[test]
fn grpo_on_two_ranks_keeps_the_ranks_identical() {
    let ws = workspace();
    assert_ok(&ws.single("grpo", "grpo-one", &[]));
    // Each rank samples the groups of its three prompts; batch statistics (the reward's std,
    // the token count of the loss) are reduced over ranks, and the run ends with a cross-rank
    // checksum of the weights.
    let results = wait_all(ws.ranks("grpo", "grpo-two", &[]));
    assert_all_ok(&results);
    let (one, two) = (ws.metrics("grpo-one"), ws.metrics("grpo-two"));
    assert_eq!(one.len(), two.len());
    for b in &two {
        for key in ["reward", "reward_std", "kl", "loss", "rewards/rm/mean"] {
            assert!(b[key].as_f64().is_some_and(f64::is_finite), "{key}: {b}");
        }
    }
}

#[test]
fn a_rank_that_dies_ends_the_other_with_a_message() {
    let ws = workspace();
    let mut ranks = ws.ranks("sft", "dies", &["--set", "train.max_steps=100000"]);
    let mut lines = std::io::BufReader::new(ranks[0].stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("step 3/") {
            break;
        }
    }
    ranks[1].kill().unwrap();
    let started = Instant::now();
    let rest: String = lines.map(|l| l.unwrap() + "\n").collect();
    let status = ranks[0].wait().unwrap();
    let _ = ranks[1].wait();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(rest.contains("rank 0 of 2: lost contact with the other ranks"), "{rest}");
    // The checkpoint rank 0 saved last is whole and resumable.
    assert!(ws.path("runs/dies/state").is_dir());
}

#[test]
fn a_two_rank_run_stopped_by_sigterm_resumes_on_two_ranks_or_one() {
    let ws = workspace();
    assert_ok(&ws.single("sft", "whole", &[]));
    let mut resume: &[&str] = &[];
    for stop_at in ["step 4/", "step 8/"] {
        let mut ranks = ws.ranks("sft", "stopped", resume);
        let mut lines = std::io::BufReader::new(ranks[0].stderr.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap().starts_with(stop_at) {
                break;
            }
        }
        // A launcher forwards the signal to every rank; they need not get it at one step.
        for child in &ranks {
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        }
        let rest: String = lines.map(|l| l.unwrap() + "\n").collect();
        for (rank, child) in ranks.iter_mut().enumerate() {
            assert_eq!(child.wait().unwrap().code(), Some(143), "rank {rank}:\n{rest}");
        }
        assert!(rest.contains("--resume"), "{rest}");
        resume = &["--resume"];
    }
    assert_ok(&ws.single("sft", "stopped", &["--resume"]));
    let diff = weight_diff(&ws.path("runs/whole"), &ws.path("runs/stopped"));
    assert!(diff <= 1e-5, "stopped twice and resumed: {diff} from the uninterrupted run");
    let steps = |run| ws.metrics(run).iter().map(|r| r["step"].clone()).collect::<Vec<_>>();
    assert_eq!(steps("whole"), steps("stopped"));
}

#[test]
fn torchrun_launches_rlhf_as_it_is() {
    let ws = workspace();
    let torchrun = python().with_file_name("torchrun");
    let port = free_port().to_string();
    let args = Workspace::train_args("reward", "torchrun", &["--set", "train.max_steps=4"]);
    let output = Command::new(torchrun)
        .args(["--nproc-per-node", "2", "--master-port", &port, "--no-python"])
        .arg(env!("CARGO_BIN_EXE_rlhf"))
        .args(["--threads", "1"])
        .args(&args)
        .current_dir(&ws.dir)
        .output()
        .unwrap();
    assert_ok(&output);
    assert_eq!(ws.metrics("torchrun").last().unwrap()["step"], 4);
}
