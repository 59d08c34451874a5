//! `rlhf grpo` end to end on a task with a verifiable reward: every answer is six words, each
//! "yes" or "no", and a reward program counts the word the prompt row asks for (its `want`
//! field). The SFT policy says them half and half; GRPO should raise the count on held-out
//! prompts. Also: RLOO with a KL term and several updates, a reward model beside a program,
//! resuming, and reward programs that fail.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::*;
use serde_json::{Value, json};

/// Deterministic pseudo-random words.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn answer(&mut self) -> String {
        let words: Vec<&str> =
            (0..6).map(|_| if self.next() % 2 == 0 { "yes" } else { "no" }).collect();
        words.join(" ")
    }
}

fn prompt(round: usize) -> String {
    format!("Round {round}: give me six words.")
}

/// The reward program: how many of the completion's words are the row's `want`.
const COUNTER: &str = r#"
import json, sys
for line in sys.stdin:
    request = json.loads(line)
    words = request["completion"].split()
    print(sum(w == request["want"] for w in words), flush=True)
"#;

/// SFT policy (and a reward model), trained once for every test of this file.
struct Workspace {
    dir: PathBuf,
}

fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(Workspace::new)
}

impl Workspace {
    fn new() -> Self {
        let dir = root().join("target/test-work/grpo");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ws = Self { dir };
        let mut rng = Lcg(7);
        let sft: Vec<Value> = (0..480)
            .map(|i| json!({"prompt": prompt(i % 120), "completion": rng.answer()}))
            .collect();
        let prefs: Vec<Value> = (0..200)
            .map(|i| json!({"prompt": prompt(i % 120), "chosen": "yes yes yes", "rejected": rng.answer()}))
            .collect();
        let prompts = |rounds: std::ops::Range<usize>| -> Vec<Value> {
            rounds.map(|r| json!({"prompt": prompt(r), "want": "yes"})).collect()
        };
        ws.write_jsonl("sft.jsonl", &sft);
        ws.write_jsonl("prefs.jsonl", &prefs);
        ws.write_jsonl("prompts.jsonl", &prompts(0..120));
        ws.write_jsonl("heldout.jsonl", &prompts(200..248));
        std::fs::write(ws.path("counter.py"), COUNTER).unwrap();
        let tokenizer =
            ["tokenizer", "train", "--data", "sft.jsonl", "--vocab-size", "300", "--out", "tok"];
        assert_ok(&ws.run(&tokenizer));
        std::fs::write(ws.path("sft.toml"), SFT_CONFIG).unwrap();
        assert_ok(&ws.run(&["sft", "train", "--config", "sft.toml"]));
        std::fs::write(ws.path("grpo.toml"), GRPO_CONFIG.replace("PYTHON", &python_path()))
            .unwrap();
        ws
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write_jsonl(&self, name: &str, rows: &[Value]) {
        write_jsonl(&self.path(name), rows);
    }

    fn command(&self, args: &[&str]) -> Command {
        rlhf_in(&self.dir, args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `rlhf grpo train --config grpo.toml --set …` plus `extra` arguments.
    fn grpo_args<'a>(&self, sets: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["grpo", "train", "--config", "grpo.toml"];
        for set in sets {
            args.extend(["--set", set]);
        }
        args.extend(extra);
        args
    }

    /// `rlhf grpo eval --json` of `policy` on the held-out prompts, scored by grpo.toml's
    /// rewards.
    fn eval(&self, policy: &str) -> Value {
        let out = self.run(&[
            "grpo",
            "eval",
            "--policy",
            policy,
            "--config",
            "grpo.toml",
            "--data",
            "heldout.jsonl",
            "--max-new-tokens",
            "12",
            "--json",
        ]);
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn metrics(&self, run: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path(run).join("metrics.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// The Python that runs the reward program (the project's venv: any python3 would do).
fn python_path() -> String {
    python().display().to_string()
}

const SFT_CONFIG: &str = r#"
[model]
init = "tiny"
tokenizer = "tok"
[data]
train = "sft.jsonl"
max_len = 48
[train]
max_steps = 150
batch_size = 16
lr = 3e-3
warmup_steps = 10
eval_every = 0
save_every = 0
log_every = 50
[output]
dir = "runs/sft"
"#;

const GRPO_CONFIG: &str = r#"
[model]
base = "runs/sft"
[data]
prompts = "prompts.jsonl"
max_prompt_len = 32
[rollout]
max_new_tokens = 12
[[rewards]]
name = "yes"
command = ["PYTHON", "counter.py"]
[grpo]
num_generations = 8
micro_batch_size = 32
log_completions_every = 10
[train]
max_steps = 30
batch_size = 4
lr = 3e-4
warmup_steps = 0
schedule = "constant"
save_every = 0
log_every = 5
[output]
dir = "runs/grpo"
"#;

#[test]
fn grpo_with_a_reward_program_raises_the_reward_on_held_out_prompts() {
    let ws = workspace();
    assert_ok(&ws.run(&ws.grpo_args(&[], &[])));
    let (sft, grpo) = (ws.eval("runs/sft"), ws.eval("runs/grpo"));
    let reward = |v: &Value| v["rewards"]["yes"]["mean"].as_f64().unwrap();
    let (before, after) = (reward(&sft), reward(&grpo));
    eprintln!(
        "held-out \"yes\" count: SFT {before:.3} → GRPO {after:.3}; KL to SFT {:.3} nats",
        grpo["kl_mean"].as_f64().unwrap()
    );
    assert!(after > before + 0.5, "reward {before} → {after}");
    assert_eq!(grpo["reward_mean"], grpo["rewards"]["yes"]["mean"], "one function of weight 1");
    assert_eq!(grpo["reference"], "runs/sft", "a GRPO checkpoint is compared with its parent");

    // Every iteration is logged under TRL's names; β = 0 logs no KL.
    let metrics = ws.metrics("runs/grpo");
    let last = metrics.last().unwrap();
    for key in [
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "rewards/yes/mean",
        "rewards/yes/std",
        "clip_ratio/region_mean",
        "entropy",
        "completions/mean_length",
        "completions/clipped_ratio",
        "rollout_s",
        "update_s",
    ] {
        assert!(last[key].is_number(), "metrics.jsonl lacks {key}: {last}");
    }
    assert!(last.get("kl").is_none(), "β = 0: no reference, no KL");
    assert_eq!(last["clip_ratio/region_mean"], 0.0, "one update per batch: the ratio is 1");
    // Iterations 1, 10, 20, 30 log their 4 × 8 completions.
    let completions = std::fs::read_to_string(ws.path("runs/grpo/completions.jsonl")).unwrap();
    let rows: Vec<Value> = completions.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4 * 32);
    assert!(rows[0]["rewards"]["yes"].is_number() && rows[0]["advantage"].is_number());
    // The policy is an ordinary causal LM.
    assert_ok(&ws.run(&[
        "generate",
        "--model",
        "runs/grpo",
        "--prompt",
        "Round 3: give me six words.",
    ]));
}

#[test]
fn rloo_with_a_kl_term_and_several_updates_per_batch() {
    let ws = workspace();
    let sets = [
        "grpo.advantage=rloo",
        "grpo.beta=0.04",
        "grpo.num_iterations=2",
        "grpo.loss_type=grpo",
        "grpo.epsilon_high=0.28",
        "grpo.mask_truncated_completions=true",
        "grpo.micro_batch_size=5",
        "train.max_steps=3",
        "train.log_every=1",
        "output.dir=runs/rloo",
    ];
    assert_ok(&ws.run(&ws.grpo_args(&sets, &[])));
    let metrics = ws.metrics("runs/rloo");
    assert_eq!(metrics.len(), 3);
    // The first update starts at the sampling policy: KL 0; the second has moved.
    let kl = metrics[2]["kl"].as_f64().unwrap();
    assert!(kl > 0.0 && kl < 1.0, "kl {kl}");
    let lineage: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("runs/rloo/rlhf.json")).unwrap())
            .unwrap();
    assert_eq!(lineage["config"]["config"]["grpo"]["advantage"], "rloo");
}

/// With `[model.lora]` the policy trains adapters and π_ref is the same weights with the
/// adapters off: KL starts at 0 (B starts at zero) and grows as the reward does.
#[test]
fn grpo_with_lora_trains_adapters_against_the_policy_without_them() {
    let ws = workspace();
    let sets = [
        "model.lora.rank=8",
        "grpo.beta=0.04",
        "train.lr=3e-3",
        "train.log_every=1",
        "output.dir=runs/grpo-lora",
    ];
    assert_ok(&ws.run(&ws.grpo_args(&sets, &[])));
    assert!(ws.path("runs/grpo-lora/adapter_model.safetensors").is_file());
    assert!(!ws.path("runs/grpo-lora/model.safetensors").exists());
    let metrics = ws.metrics("runs/grpo-lora");
    let kl = |i: usize| metrics[i]["kl"].as_f64().unwrap();
    assert!(kl(0).abs() < 1e-4, "the adapters start at zero: kl {}", kl(0));
    assert!(kl(metrics.len() - 1) > 1e-3, "kl {}", kl(metrics.len() - 1));
    let (sft, grpo) = (ws.eval("runs/sft"), ws.eval("runs/grpo-lora"));
    let reward = |v: &Value| v["rewards"]["yes"]["mean"].as_f64().unwrap();
    assert!(reward(&grpo) > reward(&sft) + 0.5, "{} → {}", reward(&sft), reward(&grpo));
}

#[test]
fn a_reward_model_and_a_program_are_weighted_and_logged_by_name() {
    let ws = workspace();
    std::fs::write(ws.path("reward.toml"), REWARD_CONFIG).unwrap();
    assert_ok(&ws.run(&["reward", "train", "--config", "reward.toml"]));
    let config = std::fs::read_to_string(ws.path("grpo.toml")).unwrap()
        + "[[rewards]]\nmodel = \"runs/rm\"\nweight = 0.5\n";
    std::fs::write(ws.path("grpo-two.toml"), config).unwrap();
    let sets = ["train.max_steps=1", "output.dir=runs/two"];
    let mut args = ws.grpo_args(&sets, &[]);
    args[3] = "grpo-two.toml";
    assert_ok(&ws.run(&args));
    let last = ws.metrics("runs/two").pop().unwrap();
    let (yes, rm) =
        (last["rewards/yes/mean"].as_f64().unwrap(), last["rewards/rm/mean"].as_f64().unwrap());
    let reward = last["reward"].as_f64().unwrap();
    assert!((reward - (yes + 0.5 * rm)).abs() < 1e-3, "{reward} vs {yes} + 0.5 × {rm}");
}

const REWARD_CONFIG: &str = r#"
[model]
base = "runs/sft"
[data]
train = "prefs.jsonl"
max_len = 48
[train]
max_steps = 20
batch_size = 16
lr = 1e-3
warmup_steps = 0
eval_every = 0
save_every = 0
log_every = 50
[output]
dir = "runs/rm"
"#;

#[test]
fn ctrl_c_saves_and_resuming_matches_an_uninterrupted_run() {
    let ws = workspace();
    let sets = ["train.max_steps=5", "train.log_every=1", "grpo.num_iterations=2"];
    let straight = [&sets[..], &["output.dir=runs/straight"]].concat();
    assert_ok(&ws.run(&ws.grpo_args(&straight, &[])));

    let stopped = [&sets[..], &["output.dir=runs/stopped"]].concat();
    let (status, seen) = interrupt_at(ws.command(&ws.grpo_args(&stopped, &[])), "step 3/");
    assert_eq!(status.code(), Some(130), "{seen}");
    assert_ok(&ws.run(&ws.grpo_args(&stopped, &["--resume"])));
    let a = read(&ws.path("runs/straight/model.safetensors"));
    let b = read(&ws.path("runs/stopped/model.safetensors"));
    for (name, expected) in &a {
        let diff = max_abs_diff(&floats(&b[name]), &floats(expected), |_| true);
        assert!(diff <= 1e-5, "{name}: resumed run differs by {diff}");
    }
    let reward = |run: &str| ws.metrics(run).last().unwrap()["reward"].clone();
    assert_eq!(reward("runs/straight"), reward("runs/stopped"));
}

#[test]
fn a_reward_program_that_fails_stops_the_run_with_its_name_and_writes_nothing() {
    let ws = workspace();
    let python = python_path();
    let cases = [
        (format!("[\"{python}\", \"-c\", \"import sys; sys.exit(3)\"]"), "exited"),
        (format!("[\"{python}\", \"-c\", \"input(); print('yes!', flush=True)\"]"), "yes!"),
        ("[\"no-such-judge\"]".to_string(), "no-such-judge"),
    ];
    for (i, (command, expected)) in cases.iter().enumerate() {
        let config = format!(
            "[model]\nbase = \"runs/sft\"\n[data]\nprompts = \"prompts.jsonl\"\nmax_prompt_len = 32\n[rollout]\nmax_new_tokens = 12\n[[rewards]]\nname = \"judge\"\ncommand = {command}\n[train]\nmax_steps = 1\nbatch_size = 2\n[output]\ndir = \"runs/failed-{i}\"\n"
        );
        std::fs::write(ws.path("failing.toml"), config).unwrap();
        let out = ws.run(&["grpo", "train", "--config", "failing.toml"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(err.contains("judge") && err.contains(expected), "{command}: {err}");
        assert!(!ws.path(&format!("runs/failed-{i}")).exists(), "{command}: wrote a checkpoint");
    }
}

#[test]
fn configs_without_rewards_or_with_one_generation_are_refused() {
    let ws = workspace();
    let base = "[model]\nbase = \"runs/sft\"\n[data]\nprompts = \"prompts.jsonl\"\n[output]\ndir = \"runs/refused\"\n";
    for (extra, expected) in [
        ("", "no reward"),
        ("[[rewards]]\nmodel = \"runs/sft\"\n[grpo]\nnum_generations = 1\n", "num_generations"),
        ("[[rewards]]\nmodel = \"runs/sft\"\ncommand = [\"x\"]\n", "exactly one of"),
    ] {
        std::fs::write(ws.path("refused.toml"), format!("{base}{extra}")).unwrap();
        let out = ws.run(&["grpo", "train", "--config", "refused.toml"]);
        assert_eq!(out.status.code(), Some(2), "{extra}");
        assert!(stderr(&out).contains(expected), "{extra}: {}", stderr(&out));
    }
}

fn number(record: &Value, key: &str) -> f64 {
    record[key].as_f64().unwrap_or_else(|| panic!("no `{key}` in {record}"))
}

/// `rlhf grpo train`'s first step against TRL 1.12's `GRPOTrainer` on the same completions
/// (ours, replayed by scripts/bench/trl_grpo_step.py): advantages, loss, metrics and the
/// weights after one AdamW step. The first iteration has π_old = π on both sides.
#[test]
fn one_step_matches_trl_grpo_trainer() {
    let Some(python) = trl_python() else {
        eprintln!(
            "skipped: no TRL 1.12.0 venv; run scripts/bench/trl_venv.sh (a few minutes, once) to compare with TRL"
        );
        return;
    };
    let ws = workspace();
    // Prompts of one length: TRL left-pads prompts without position ids, which moves a
    // shorter prompt along GPT-2's absolute positions (the script refuses that).
    let prompts: Vec<Value> =
        [3, 5, 7, 9].iter().map(|&r| json!({"prompt": prompt(r), "want": "yes"})).collect();
    ws.write_jsonl("parity-prompts.jsonl", &prompts);
    // A reference other than the start, so that the KL term and its gradient are not 0.
    let init =
        ["model", "init", "--preset", "tiny", "--tokenizer", "tok", "--out", "ref", "--seed", "1"];
    assert_ok(&ws.run(&init));
    let lr = "1e-3";
    // (name, temperature, --set, the script's flags). Sampled hot, the completions' lengths
    // differ (some hit max_new_tokens), so each loss_type's normalisation shows in the
    // gradient; the temperature also divides the logits of the loss on both sides.
    let cases: [(&str, &str, &[&str], &[&str]); 4] = [
        ("dapo", "2.0", &[], &[]),
        (
            "grpo-kl",
            "2.0",
            &["grpo.loss_type=grpo", "grpo.beta=0.04", "model.reference=ref"],
            &["--loss-type", "grpo", "--beta", "0.04", "--reference", "ref"],
        ),
        (
            "dr_grpo",
            "1.5",
            &["grpo.loss_type=dr_grpo", "grpo.epsilon_high=0.28"],
            &["--loss-type", "dr_grpo", "--epsilon-high", "0.28"],
        ),
        (
            "bnpo-batch",
            "2.0",
            &["grpo.loss_type=bnpo", "grpo.scale_rewards=batch"],
            &["--loss-type", "bnpo", "--scale-rewards", "batch"],
        ),
    ];
    let start = read(&ws.path("runs/sft/model.safetensors"));
    for (name, temperature, sets, trl_args) in cases {
        let run = format!("runs/parity-{name}");
        let common = [
            "data.prompts=parity-prompts.jsonl".to_string(),
            "train.max_steps=1".into(),
            format!("train.lr={lr}"),
            format!("rollout.temperature={temperature}"),
            "grpo.log_completions_every=1".into(),
            format!("output.dir={run}"),
        ];
        let sets: Vec<&str> =
            common.iter().map(String::as_str).chain(sets.iter().copied()).collect();
        assert_ok(&ws.run(&ws.grpo_args(&sets, &[])));
        let trl_out = ws.path(&format!("trl/{name}"));
        let out = Command::new(&python)
            .arg(root().join("scripts/bench/trl_grpo_step.py"))
            .args(["--model", "runs/sft", "--completions", &format!("{run}/completions.jsonl")])
            .args(["--num-generations", "8", "--max-completion-length", "12", "--lr", lr])
            .args(["--temperature", temperature])
            .args(trl_args)
            .args(["--out", trl_out.to_str().unwrap()])
            .current_dir(&ws.dir)
            .output()
            .unwrap();
        assert_ok(&out);
        let trl: Value =
            serde_json::from_str(&std::fs::read_to_string(trl_out.join("metrics.json")).unwrap())
                .unwrap();
        let logged = &trl["metrics"];
        let ours = ws.metrics(&run).pop().unwrap();

        // The advantages TRL computes from our rewards are ours.
        let rows = std::fs::read_to_string(ws.path(&format!("{run}/completions.jsonl"))).unwrap();
        let rows: Vec<Value> = rows.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let theirs = trl["advantages"].as_array().unwrap();
        assert_eq!(rows.len(), theirs.len());
        let mut advantage_diff = 0f64;
        for (row, theirs) in rows.iter().zip(theirs) {
            let (a, b) = (number(row, "advantage"), theirs.as_f64().unwrap());
            advantage_diff = advantage_diff.max((a - b).abs() / b.abs().max(1.0));
        }
        assert!(advantage_diff <= 1e-5, "{name}: advantages differ from TRL's by {advantage_diff}");
        assert!(rows.iter().any(|r| number(r, "advantage").abs() > 0.1), "{name}: no signal");
        let lengths: std::collections::BTreeSet<u64> =
            rows.iter().map(|r| r["tokens"].as_u64().unwrap()).collect();
        assert!(lengths.len() > 1, "{name}: every completion is {lengths:?} tokens long");

        let mut keys = vec!["loss", "grad_norm", "entropy", "clip_ratio/region_mean", "reward"];
        if sets.iter().any(|s| s.starts_with("grpo.beta")) {
            keys.push("kl");
            assert!(number(logged, "kl") > 0.1, "{name}: π_ref = π: {logged}");
        }
        let mut worst = (0f64, "");
        for key in keys {
            let (got, want) = (number(&ours, key), number(logged, key));
            // metrics.jsonl has 5 decimals: 5e-6 of the 1e-5 is rounding.
            let diff = (got - want).abs() / want.abs().max(1.0);
            assert!(diff <= 1e-5, "{name} {key}: {got} vs TRL's {want}");
            if diff >= worst.0 {
                worst = (diff, key);
            }
        }

        let (a, b) = (
            read(&ws.path(&format!("{run}/model.safetensors"))),
            read(&trl_out.join("model.safetensors")),
        );
        let (mut moved, mut differ) = (0f32, 0f32);
        for (tensor, ours) in &a {
            let theirs = b.get(tensor).unwrap_or_else(|| panic!("{name}: TRL saved no {tensor}"));
            let (ours, theirs) = (floats(ours), floats(theirs));
            // The key bias (the middle third of GPT-2's fused c_attn bias) adds q·b_k to every
            // score of a query, which softmax ignores: its gradient is 0, and what rounding
            // leaves (~1e-9) AdamW's first step divides by its own size (+1e-8), on either
            // side its own way. Every other weight is compared.
            let n = ours.len() / 3;
            let key_bias =
                |i: usize| tensor.ends_with("attn.c_attn.bias") && (n..2 * n).contains(&i);
            differ = differ.max(max_abs_diff(&ours, &theirs, |i| !key_bias(i)));
            moved = moved.max(max_abs_diff(&ours, &floats(&start[tensor]), |_| true));
        }
        assert!(moved > 5e-4, "{name}: the step moved the weights by only {moved}");
        assert!(differ <= 1e-5, "{name}: weights after the step differ from TRL's by {differ}");
        eprintln!(
            "{name}: loss {} (TRL {}), metrics within {:.1e} ({}), advantages within {advantage_diff:.1e}, weights within {differ:.1e}",
            number(&ours, "loss"),
            number(&trl, "loss"),
            worst.0,
            worst.1,
        );
    }
}
