//! `rlhf ppo` end to end on a task with a learnable preference: every answer is six words, each
//! "yes" or "no". The SFT policy says them half and half; the reward model is trained on
//! comparisons where the answer with more "yes" wins; PPO should raise the reward on held-out
//! prompts while the adaptive KL penalty keeps the policy near the SFT model. Also: resuming
//! matches an uninterrupted run, the shared value head, and bad input.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::*;
use serde_json::{Value, json};

const TARGET_KL: f64 = 3.0;

/// Deterministic pseudo-random words.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn answer(&mut self) -> (String, usize) {
        let words: Vec<&str> =
            (0..6).map(|_| if self.next() % 2 == 0 { "yes" } else { "no" }).collect();
        (words.join(" "), words.iter().filter(|w| **w == "yes").count())
    }
}

fn prompt(round: usize) -> String {
    format!("Round {round}: give me six words.")
}

/// SFT policy and reward model, trained once for every test of this file.
struct Workspace {
    dir: PathBuf,
}

fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(Workspace::new)
}

impl Workspace {
    fn new() -> Self {
        let dir = root().join("target/test-work/ppo");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ws = Self { dir };
        let mut rng = Lcg(7);
        let sft: Vec<Value> = (0..480)
            .map(|i| json!({"prompt": prompt(i % 120), "completion": rng.answer().0}))
            .collect();
        let mut prefs = Vec::new();
        while prefs.len() < 400 {
            let (a, yes_a) = rng.answer();
            let (b, yes_b) = rng.answer();
            if yes_a != yes_b {
                let (chosen, rejected) = if yes_a > yes_b { (a, b) } else { (b, a) };
                let p = prompt(prefs.len() % 120);
                prefs.push(json!({"prompt": p, "chosen": chosen, "rejected": rejected}));
            }
        }
        let prompts = |rounds: std::ops::Range<usize>| -> Vec<Value> {
            rounds.map(|r| json!({"prompt": prompt(r)})).collect()
        };
        ws.write_jsonl("sft.jsonl", &sft);
        ws.write_jsonl("prefs.jsonl", &prefs);
        ws.write_jsonl("prompts.jsonl", &prompts(0..120));
        ws.write_jsonl("heldout.jsonl", &prompts(200..264));
        let tokenizer =
            ["tokenizer", "train", "--data", "sft.jsonl", "--vocab-size", "300", "--out", "tok"];
        assert_ok(&ws.run(&tokenizer));
        std::fs::write(ws.path("sft.toml"), SFT_CONFIG).unwrap();
        assert_ok(&ws.run(&["sft", "train", "--config", "sft.toml"]));
        std::fs::write(ws.path("reward.toml"), REWARD_CONFIG).unwrap();
        assert_ok(&ws.run(&["reward", "train", "--config", "reward.toml"]));
        std::fs::write(ws.path("ppo.toml"), PPO_CONFIG).unwrap();
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

    /// `rlhf ppo train --config ppo.toml --set …` plus `extra` arguments.
    fn ppo_args<'a>(&self, sets: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["ppo", "train", "--config", "ppo.toml"];
        for set in sets {
            args.extend(["--set", set]);
        }
        args.extend(extra);
        args
    }

    /// `rlhf ppo eval --json` of `policy` on the held-out prompts.
    fn eval(&self, policy: &str) -> Value {
        let out = self.run(&[
            "ppo",
            "eval",
            "--policy",
            policy,
            "--reward",
            "runs/rm",
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

const REWARD_CONFIG: &str = r#"
[model]
base = "runs/sft"
[data]
train = "prefs.jsonl"
valid_fraction = 0.1
max_len = 48
[train]
max_steps = 120
batch_size = 16
lr = 1e-3
warmup_steps = 10
eval_every = 0
save_every = 0
log_every = 50
[output]
dir = "runs/rm"
"#;

const PPO_CONFIG: &str = r#"
[model]
policy = "runs/sft"
reward = "runs/rm"
[data]
prompts = "prompts.jsonl"
max_prompt_len = 32
[rollout]
max_new_tokens = 12
[ppo]
mini_batch_size = 8
kl_coef = 0.05
target_kl = 3.0
kl_horizon = 200.0
[train]
max_steps = 40
batch_size = 16
lr = 3e-4
warmup_steps = 0
schedule = "constant"
save_every = 0
log_every = 5
[output]
dir = "runs/ppo"
"#;

#[test]
fn ppo_raises_the_reward_on_held_out_prompts_and_keeps_the_kl_near_its_target() {
    let ws = workspace();
    assert_ok(&ws.run(&ws.ppo_args(&[], &[])));
    let (sft, ppo) = (ws.eval("runs/sft"), ws.eval("runs/ppo"));
    let (before, after) =
        (sft["reward_mean"].as_f64().unwrap(), ppo["reward_mean"].as_f64().unwrap());
    let kl = ppo["kl_mean"].as_f64().unwrap();
    eprintln!(
        "held-out reward: SFT {before:.3} ± {:.3} → PPO {after:.3} ± {:.3} (+{:.3}); KL to SFT {kl:.3} nats (target {TARGET_KL})",
        sft["reward_std"].as_f64().unwrap(),
        ppo["reward_std"].as_f64().unwrap(),
        after - before
    );
    let spread = sft["reward_std"].as_f64().unwrap();
    assert!(after > before + 0.5 * spread, "reward {before} → {after} (SFT spread {spread})");
    assert!(kl < 2.0 * TARGET_KL, "KL {kl} over twice the target {TARGET_KL}");
    assert_eq!(ppo["reference"], "runs/sft", "a PPO checkpoint is compared with its SFT parent");
    assert!(sft["kl_mean"].as_f64().unwrap().abs() < 1e-4, "the SFT policy is its own reference");

    // Every iteration is logged with what a PPO user reads.
    let metrics = ws.metrics("runs/ppo");
    for key in [
        "score",
        "score_std",
        "rm_score",
        "kl",
        "beta",
        "entropy",
        "clip_fraction",
        "approx_kl",
        "policy_loss",
        "value_loss",
        "explained_variance",
        "response_length",
        "rollout_s",
        "update_s",
        "tokens_per_s",
    ] {
        assert!(metrics.last().unwrap()[key].is_number(), "metrics.jsonl lacks {key}");
    }
    let beta = |m: &Value| m["beta"].as_f64().unwrap();
    assert_ne!(beta(&metrics[0]), beta(metrics.last().unwrap()), "the adaptive β moves");
    // The checkpoint: policy as a causal LM, value model as a scalar model beside it.
    let config = |dir: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(ws.path(dir).join("config.json")).unwrap())
            .unwrap()
    };
    assert_eq!(config("runs/ppo")["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(config("runs/ppo/value")["architectures"][0], "GPT2ForSequenceClassification");
    assert!(ws.path("runs/ppo/samples.jsonl").is_file());
    let inspect = ws.run(&["model", "inspect", "--model", "runs/ppo"]);
    assert_ok(&inspect);
}

#[test]
fn ctrl_c_saves_and_resuming_matches_an_uninterrupted_run() {
    let ws = workspace();
    let sets =
        ["train.max_steps=6", "train.log_every=1", "ppo.ptx_coef=0.5", "data.ptx=sft-text.jsonl"];
    let text: Vec<Value> =
        (0..40).map(|i| json!({"text": format!("Round {i}: yes no yes.")})).collect();
    ws.write_jsonl("sft-text.jsonl", &text);
    let straight = [&sets[..], &["output.dir=runs/straight"]].concat();
    assert_ok(&ws.run(&ws.ppo_args(&straight, &[])));

    let stopped = [&sets[..], &["output.dir=runs/stopped"]].concat();
    let (status, seen) = interrupt_at(ws.command(&ws.ppo_args(&stopped, &[])), "step 3/");
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("--resume"), "{seen}");
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path("runs/stopped/state/trainer.json")).unwrap(),
    )
    .unwrap();
    assert!(saved["step"].as_u64().unwrap() < 6, "stopped early: {saved}");
    assert_ok(&ws.run(&ws.ppo_args(&stopped, &["--resume"])));

    for file in ["model.safetensors", "value/model.safetensors"] {
        let a = read(&ws.path("runs/straight").join(file));
        let b = read(&ws.path("runs/stopped").join(file));
        for (name, expected) in &a {
            let diff = max_abs_diff(&floats(&b[name]), &floats(expected), |_| true);
            assert!(diff <= 1e-5, "{file} {name}: resumed run differs by {diff}");
        }
    }
    let beta = |run: &str| ws.metrics(run).last().unwrap()["beta"].as_f64().unwrap();
    assert_eq!(beta("runs/straight"), beta("runs/stopped"), "β carries over");
    assert!(ws.metrics("runs/stopped").last().unwrap()["ptx_loss"].is_number());
}

/// With `[model.lora]` the policy and the value model train adapters (the value head whole),
/// π_ref is the policy with its adapters off, and a resumed run ends where a straight one does.
#[test]
fn ppo_with_lora_trains_adapters_and_resumes_exactly() {
    let ws = workspace();
    let sets = ["train.max_steps=4", "model.lora.rank=4", "train.lr=3e-3", "train.log_every=1"];
    let straight = [&sets[..], &["output.dir=runs/lora"]].concat();
    assert_ok(&ws.run(&ws.ppo_args(&straight, &[])));
    let kl = ws.metrics("runs/lora")[0]["kl"].as_f64().unwrap();
    assert!(kl.abs() < 1e-4, "the first rollout samples the reference itself: kl {kl}");
    let halves = [&sets[..], &["output.dir=runs/lora-halves"]].concat();
    let first = [&halves[..], &["train.max_steps=2"]].concat();
    assert_ok(&ws.run(&ws.ppo_args(&first, &[])));
    assert_ok(&ws.run(&ws.ppo_args(&halves, &["--resume"])));
    for file in ["adapter_model.safetensors", "value/adapter_model.safetensors"] {
        let a = read(&ws.path("runs/lora").join(file));
        let b = read(&ws.path("runs/lora-halves").join(file));
        assert_eq!(a.len(), b.len(), "{file}");
        for (name, expected) in &a {
            let diff = max_abs_diff(&floats(&b[name]), &floats(expected), |_| true);
            assert!(diff <= 1e-5, "{file} {name}: resumed run differs by {diff}");
        }
    }
    let value = read(&ws.path("runs/lora/value/adapter_model.safetensors"));
    assert!(value.contains_key("base_model.model.score.weight"), "{:?}", value.keys());
    let eval = ["ppo", "eval", "--policy", "runs/lora", "--reward", "runs/rm"];
    assert_ok(&ws.run(&[&eval[..], &["--data", "heldout.jsonl"]].concat()));
}

#[test]
fn a_shared_value_head_trains_and_is_saved_as_a_scalar_model() {
    let ws = workspace();
    let sets = ["train.max_steps=2", "model.value_model=shared", "output.dir=runs/shared"];
    assert_ok(&ws.run(&ws.ppo_args(&sets, &[])));
    let value = read(&ws.path("runs/shared/value/model.safetensors"));
    let policy = read(&ws.path("runs/shared/model.safetensors"));
    assert!(value.contains_key("score.weight"));
    let name = "transformer.h.0.attn.c_attn.weight";
    assert_eq!(floats(&value[name]), floats(&policy[name]), "the value model is the policy's body");
    let out = ws.run(&ws.ppo_args(&sets, &["--resume"]));
    assert_ok(&out);
    assert!(stderr(&out).contains("already has all 2"), "{}", stderr(&out));
}

#[test]
fn train_layers_updates_only_the_top_blocks_and_keeps_embeddings_and_lower_blocks() {
    let ws = workspace();
    let sets = [
        "train.max_steps=2",
        "model.value_model=shared",
        "model.train_layers=1",
        "output.dir=runs/top-layer",
    ];
    assert_ok(&ws.run(&ws.ppo_args(&sets, &[])));
    let sft = read(&ws.path("runs/sft/model.safetensors"));
    let policy = read(&ws.path("runs/top-layer/model.safetensors"));
    // `tiny` has two blocks: block 0 and the (tied) embeddings stay, block 1 and ln_f train.
    for name in
        ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.mlp.c_fc.weight"]
    {
        assert_eq!(floats(&policy[name]), floats(&sft[name]), "{name} changed");
    }
    for name in ["transformer.h.1.mlp.c_fc.weight", "transformer.ln_f.weight"] {
        assert_ne!(floats(&policy[name]), floats(&sft[name]), "{name} did not train");
    }
}

#[test]
fn a_cross_encoder_reward_model_reads_the_decoded_responses() {
    let ws = workspace();
    let minilm = root().join("models/minilm");
    let base = format!("model.base={}", minilm.display());
    let rm = ["reward", "train", "--config", "reward.toml", "--set", &base, "--set"];
    let rm = [&rm[..], &["train.max_steps=2", "--set", "output.dir=runs/minilm-rm"]].concat();
    assert_ok(&ws.run(&rm));
    let sets = ["train.max_steps=1", "model.reward=runs/minilm-rm", "output.dir=runs/cross"];
    let out = ws.run(&ws.ppo_args(&sets, &[]));
    assert_ok(&out);
    assert!(stderr(&out).contains("the value model starts from the SFT model"), "{}", stderr(&out));
    assert!(ws.metrics("runs/cross")[0]["rm_score"].is_number());
}

#[test]
fn a_moderation_classifier_lowers_the_score_of_every_response() {
    let ws = workspace();
    // A decoder moderation classifier on the SFT model: "no" counts as harassment here.
    let rows: Vec<Value> = (0..16)
        .map(|i| {
            let (text, hr) = if i % 2 == 0 { ("yes yes yes", 0) } else { ("no no no", 1) };
            json!({"text": text, "HR": hr, "SH": 0})
        })
        .collect();
    ws.write_jsonl("moderation.jsonl", &rows);
    let config = "[model]\nbase = \"runs/sft\"\n[data]\ntrain = \"moderation.jsonl\"\nmax_len = 48\n[train]\nmax_steps = 2\nbatch_size = 8\n[output]\ndir = \"runs/mod\"\n";
    std::fs::write(ws.path("moderate.toml"), config).unwrap();
    assert_ok(&ws.run(&["moderate", "train", "--config", "moderate.toml"]));
    let sets = [
        "train.max_steps=1",
        "reward.moderation=runs/mod",
        "reward.moderation_penalty=2.0",
        "reward.normalize=false",
        "output.dir=runs/moderated",
    ];
    assert_ok(&ws.run(&ws.ppo_args(&sets, &[])));
    let text = std::fs::read_to_string(ws.path("runs/moderated/samples.jsonl")).unwrap();
    for line in text.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let (score, rm) = (row["score"].as_f64().unwrap(), row["rm_score"].as_f64().unwrap());
        assert!(score < rm, "the penalty (2 × the top category score) is subtracted: {row}");
    }
}

#[test]
fn bad_prompts_and_wrong_models_exit_2_and_write_nothing() {
    let ws = workspace();
    std::fs::write(
        ws.path("bad-prompts.jsonl"),
        "{\"prompt\": \"fine\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n",
    )
    .unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["data.prompts=bad-prompts.jsonl"],
            "bad-prompts.jsonl:2: field `messages`: the conversation must end with a user turn",
        ),
        (&["model.policy=runs/rm"], "runs/rm: this is a scalar (reward or value) model"),
        (&["model.reward=runs/sft"], "runs/sft"),
        (&["ppo.mini_batch_size=0"], "key `ppo.mini_batch_size` must be at least 1"),
    ];
    for (sets, expected) in cases {
        let sets = [sets, &["output.dir=runs/never"]].concat();
        let out = ws.run(&ws.ppo_args(&sets, &[]));
        assert_eq!(out.status.code(), Some(2), "{sets:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{sets:?}: {}", stderr(&out));
        assert!(!ws.path("runs/never").exists(), "{sets:?} wrote output");
    }
}
