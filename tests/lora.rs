//! LoRA end to end: adapter directories that `peft` loads with the same logits, merged ones
//! that `transformers` loads, a reward model's head saved whole, exact resume, every stage
//! training adapters, and bad input refused before anything is written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use burn::prelude::*;
use common::*;
use rlhf::model::weights::{NamedTensors, write_file};
use rlhf::model::{load_causal_lm, load_scalar_model};
use serde_json::{Value, json};

/// Two tiny base models (Llama and GPT-2, whose Conv1D weights lie the other way round),
/// demonstrations, comparisons and a batch of token ids, made once for every test here.
struct Workspace {
    dir: PathBuf,
}

fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(Workspace::new)
}

impl Workspace {
    fn new() -> Self {
        let dir = root().join("target/test-work/lora");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ws = Self { dir };
        let tokenizer = fixtures().join("tokenizer");
        assert_ok(&init_model("llama-tiny", &tokenizer, &ws.path("llama"), &[]));
        assert_ok(&init_model("tiny", &tokenizer, &ws.path("gpt2"), &[]));
        let qa = [("What color is the sky?", "The sky is blue."), ("Two plus two?", "Four.")];
        let sft: Vec<Value> =
            (0..32).map(|i| json!({"prompt": qa[i % 2].0, "completion": qa[i % 2].1})).collect();
        write_jsonl(&ws.path("sft.jsonl"), &sft);
        let prefs: Vec<Value> = (0..32)
            .map(|i| json!({"prompt": qa[i % 2].0, "chosen": qa[i % 2].1, "rejected": "No idea."}))
            .collect();
        write_jsonl(&ws.path("prefs.jsonl"), &prefs);
        let thumbs: Vec<Value> = (0..32)
            .map(|i| json!({"prompt": qa[i % 2].0, "completion": if i % 4 < 2 { qa[i % 2].1 } else { "No idea." }, "label": i % 4 < 2}))
            .collect();
        write_jsonl(&ws.path("thumbs.jsonl"), &thumbs);
        // Two rows of token ids, the first left-padded.
        let ids: Vec<i64> = (0..16).map(|i| (i * 37 + 11) % 290 + 5).collect();
        let mask: Vec<i64> = (0..16).map(|i| i64::from(i >= 2)).collect();
        let mut io = NamedTensors::new();
        io.insert("input_ids".into(), TensorData::new(ids, [2, 8]));
        io.insert("attention_mask".into(), TensorData::new(mask, [2, 8]));
        write_file(&ws.path("io.safetensors"), &io).unwrap();
        ws
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        rlhf_in(&self.dir, args).output().unwrap()
    }

    /// `rlhf STAGE train` with a config whose `[model]` starts from `base` with `[model.lora]`
    /// rank 4, α 8, and `set`: overrides, or flags (`--resume`).
    fn train(&self, stage: &str, base: &str, data: &str, out: &str, set: &[&str]) -> Output {
        let args = self.train_args(stage, base, data, out, set);
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The arguments `train` runs, its config written.
    fn train_args(
        &self,
        stage: &str,
        base: &str,
        data: &str,
        out: &str,
        set: &[&str],
    ) -> Vec<String> {
        let config = format!(
            "[model]\nbase = \"{}\"\n[model.lora]\nrank = 4\nalpha = 8\n[data]\ntrain = \"{data}\"\n\
             max_len = 48\n[train]\nmax_steps = 8\nbatch_size = 8\nlr = 1e-2\nwarmup_steps = 0\n\
             schedule = \"constant\"\neval_every = 0\nsave_every = 0\nlog_every = 4\n\
             [output]\ndir = \"{out}\"\n",
            self.path(base).display()
        );
        let file = format!("{}.toml", out.replace('/', "-"));
        std::fs::write(self.path(&file), config).unwrap();
        let mut args: Vec<String> = [stage, "train", "--config", &file].map(String::from).to_vec();
        for s in set {
            match s.starts_with("--") {
                true => args.push(s.to_string()),
                false => args.extend(["--set".to_string(), s.to_string()]),
            }
        }
        args
    }
}

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn sft_adapters_load_in_peft_and_merge_for_transformers_with_the_same_logits() {
    let ws = workspace();
    let device = cpu();
    let io = Io::read(&ws.path("io.safetensors"));
    for family in ["llama", "gpt2"] {
        let base_weights = sha(&ws.path(family).join("model.safetensors"));
        let out = format!("runs/sft-{family}");
        assert_ok(&ws.train("sft", family, "sft.jsonl", &out, &[]));
        let adapter = ws.path(&out);
        assert!(adapter.join("adapter_config.json").is_file());
        assert!(!adapter.join("model.safetensors").exists(), "adapters only");
        assert_eq!(sha(&ws.path(family).join("model.safetensors")), base_weights, "base untouched");
        let size = |p: PathBuf| std::fs::metadata(p).unwrap().len();
        let (adapter_bytes, model_bytes) = (
            size(adapter.join("adapter_model.safetensors")),
            size(ws.path(family).join("model.safetensors")),
        );
        assert!(adapter_bytes * 2 < model_bytes, "{adapter_bytes} vs {model_bytes} bytes");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["peft_type"], "LORA");
        assert_eq!(config["r"], 4);
        assert_eq!(config["fan_in_fan_out"], family == "gpt2");

        let merged = ws.path(&format!("merged-{family}"));
        let args = ["model", "merge", "--adapter", &out, "--out", merged.to_str().unwrap()];
        assert_ok(&ws.run(&args));
        let peft_out = ws.path(&format!("peft-{family}.safetensors"));
        let merged_out = ws.path(&format!("merged-{family}.safetensors"));
        hf_forward(&[
            (adapter.clone(), ws.path("io.safetensors"), peft_out.clone()),
            (merged.clone(), ws.path("io.safetensors"), merged_out.clone()),
        ]);
        let ours = logits_of(&load_causal_lm(&adapter, &device).unwrap().model, &io, &device);
        let base =
            logits_of(&load_causal_lm(&ws.path(family), &device).unwrap().model, &io, &device);
        let vocab = ours.len() / (io.batch * io.len);
        let real = |i: usize| io.mask[i / vocab] == 1;
        for (name, file) in [("peft", &peft_out), ("transformers (merged)", &merged_out)] {
            let theirs = floats(&read(file)["logits"]);
            let diff = max_abs_diff(&ours, &theirs, real);
            assert!(diff < 1e-4, "{family}: {name} logits differ by {diff}");
        }
        let moved = max_abs_diff(&ours, &base, real);
        assert!(moved > 1e-3, "{family}: training left the logits where they were ({moved})");
    }
}

#[test]
fn a_reward_adapter_keeps_its_score_head_whole_and_peft_scores_alike() {
    let ws = workspace();
    let device = cpu();
    assert_ok(&ws.train("reward", "llama", "prefs.jsonl", "runs/rm", &[]));
    let rm = ws.path("runs/rm");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["task_type"], "SEQ_CLS");
    assert_eq!(config["modules_to_save"], json!(["score"]));
    let tensors = read(&rm.join("adapter_model.safetensors"));
    assert!(tensors.contains_key("base_model.model.score.weight"), "{:?}", tensors.keys());

    let out = ws.path("peft-rm.safetensors");
    hf_forward(&[(rm.clone(), ws.path("io.safetensors"), out.clone())]);
    let io = Io::read(&ws.path("io.safetensors"));
    let (ids, batch) = io.inputs(&device);
    let model = load_scalar_model(&rm, &device).unwrap().model;
    let ours: Vec<f32> = model.forward(ids, &batch).into_data().try_to_vec().unwrap();
    let diff = max_abs_diff(&ours, &floats(&read(&out)["scores"]), |_| true);
    assert!(diff < 1e-4, "scores differ from peft's by {diff}: {ours:?}");

    let eval = ws.run(&["reward", "eval", "--model", "runs/rm", "--data", "prefs.jsonl"]);
    assert_ok(&eval);
}

/// A LoRA run stopped halfway and resumed ends with the adapters of the run that went straight
/// through: the base is reloaded, the adapters and AdamW's moments put back.
#[test]
fn a_resumed_lora_run_ends_where_the_straight_one_does() {
    let ws = workspace();
    assert_ok(&ws.train("sft", "llama", "sft.jsonl", "runs/straight", &[]));
    assert_ok(&ws.train("sft", "llama", "sft.jsonl", "runs/halves", &["train.max_steps=4"]));
    assert_ok(&ws.train("sft", "llama", "sft.jsonl", "runs/halves", &["--resume"]));
    let (a, b) = (
        read(&ws.path("runs/straight/adapter_model.safetensors")),
        read(&ws.path("runs/halves/adapter_model.safetensors")),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, tensor) in &a {
        let diff = max_abs_diff(&floats(tensor), &floats(&b[name]), |_| true);
        assert!(diff < 1e-6, "{name} differs by {diff} after resuming");
    }
}

/// DPO and KTO train adapters too, with the starting policy as their reference for free, and
/// their output is a model every command reads (here: generate and chat), as is a DPO run on
/// top of an SFT adapter.
#[test]
fn dpo_and_kto_train_adapters_that_generate_reads() {
    let ws = workspace();
    assert_ok(&ws.train("sft", "llama", "sft.jsonl", "runs/sft-for-dpo", &[]));
    let targets = "model.lora.targets=[\"q_proj\", \"v_proj\"]";
    let dpo = ws.train("dpo", "runs/sft-for-dpo", "prefs.jsonl", "runs/dpo", &[targets]);
    assert_ok(&dpo);
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path("runs/dpo/adapter_config.json")).unwrap(),
    )
    .unwrap();
    let targeted: Vec<&str> =
        config["target_modules"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(targeted.len(), 4, "q and v of 2 blocks: {targeted:?}");
    assert!(targeted.iter().all(|t| t.ends_with("q_proj") || t.ends_with("v_proj")));
    assert_ok(&ws.train("kto", "runs/sft-for-dpo", "thumbs.jsonl", "runs/kto", &[]));
    write_jsonl(&ws.path("prompts.jsonl"), &[json!({"prompt": "What color is the sky?"})]);
    for model in ["runs/dpo", "runs/kto"] {
        let args = ["generate", "--model", model, "--data", "prompts.jsonl", "--greedy"];
        let out = ws.run(&[&args[..], &["--max-new-tokens", "4", "--out", "gen.jsonl"]].concat());
        assert_ok(&out);
    }
    let chat = ["chat", "--model", "runs/dpo", "--prompt", "What color is the sky?"];
    let out = ws.run(&[&chat[..], &["--max-new-tokens", "4", "--json"]].concat());
    assert_ok(&out);
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    assert!(reply.is_object(), "{reply}");
}

#[test]
fn bad_lora_input_exits_2_naming_it_and_writes_nothing() {
    let ws = workspace();
    let refused = |out: &str, set: &[&str], says: &str| {
        let run = ws.train("sft", "llama", "sft.jsonl", out, set);
        assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
        assert!(stderr(&run).contains(says), "{}", stderr(&run));
        assert!(!ws.path(out).exists(), "{out} written");
    };
    refused("runs/bad1", &["model.lora.targets=[\"qkv\"]"], "`qkv` matches no linear layer");
    refused("runs/bad2", &["model.lora.rank=0"], "`model.lora.rank` must be at least 1");
    refused(
        "runs/bad3",
        &["model.lora.targets=\"everything\""],
        "the one preset is \"all-linear\"",
    );

    // An adapter whose base is gone, or is not the model it was trained on (a base of its own:
    // the other tests read `llama` meanwhile).
    let base = ws.path("llama-moving");
    assert_ok(&init_model("llama-tiny", &fixtures().join("tokenizer"), &base, &[]));
    assert_ok(&ws.train("sft", "llama-moving", "sft.jsonl", "runs/moved", &[]));
    let gone = ws.path("llama-gone");
    std::fs::rename(&base, &gone).unwrap();
    let merge = |out: &str| ws.run(&["model", "merge", "--adapter", "runs/moved", "--out", out]);
    let missing = merge("merged-missing");
    std::fs::rename(&gone, &base).unwrap();
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("its base model"), "{}", stderr(&missing));
    assert!(!ws.path("merged-missing").exists());

    let other = ws.path("other");
    assert_ok(&init_model("llama-tiny", &fixtures().join("tokenizer"), &other, &["--seed", "9"]));
    let adapter_config = ws.path("runs/moved/adapter_config.json");
    let rlhf_json = ws.path("runs/moved/rlhf.json");
    let mut lineage: Value =
        serde_json::from_str(&std::fs::read_to_string(&rlhf_json).unwrap()).unwrap();
    lineage["parent"]["path"] = json!(other.display().to_string());
    std::fs::write(&rlhf_json, lineage.to_string()).unwrap();
    let changed = merge("merged-changed");
    assert_eq!(changed.status.code(), Some(2), "{}", stderr(&changed));
    assert!(stderr(&changed).contains("is not the one it was trained on"), "{}", stderr(&changed));
    assert!(!ws.path("merged-changed").exists());
    assert!(adapter_config.is_file());
}

/// Two ranks, started as torchrun starts them, train the adapters one process does: only the
/// adapters' gradients are all-reduced, and every rank draws the same A.
#[test]
fn two_ranks_train_the_adapters_one_process_does() {
    let ws = workspace();
    assert_ok(&ws.train("sft", "llama", "sft.jsonl", "runs/dp-one", &["train.grad_accum=2"]));
    let args = ws.train_args("sft", "llama", "sft.jsonl", "runs/dp-two", &["train.grad_accum=2"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ranks: Vec<_> = (0..2)
        .map(|rank: usize| {
            rlhf_in(&ws.dir, &args.iter().map(String::as_str).collect::<Vec<_>>())
                .envs([
                    ("RANK", rank.to_string()),
                    ("LOCAL_RANK", rank.to_string()),
                    ("WORLD_SIZE", "2".into()),
                    ("MASTER_ADDR", "127.0.0.1".into()),
                    ("MASTER_PORT", port.to_string()),
                    ("RLHF_DIST_TIMEOUT", "60".into()),
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut rank in ranks {
        assert!(rank.wait().unwrap().success());
    }
    let (one, two) = (
        read(&ws.path("runs/dp-one/adapter_model.safetensors")),
        read(&ws.path("runs/dp-two/adapter_model.safetensors")),
    );
    assert_eq!(one.len(), two.len());
    for (name, tensor) in &one {
        let diff = max_abs_diff(&floats(tensor), &floats(&two[name]), |_| true);
        assert!(diff <= 1e-5, "{name}: two ranks end {diff} from one process");
    }
}

/// An adapter `peft` wrote (another rank, α, targets, rsLoRA's α/√r scale) reads as it is:
/// `rlhf` gives `PeftModel`'s logits.
#[test]
fn an_adapter_peft_wrote_reads_with_peft_logits() {
    let ws = workspace();
    let device = cpu();
    let dir = ws.path("from-peft");
    let script = r#"
import sys, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
base, out = sys.argv[1:]
torch.manual_seed(0)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
    r=2, lora_alpha=6, use_rslora=True, target_modules=["q_proj", "v_proj", "down_proj"]))
for name, p in model.named_parameters():
    if "lora_B" in name:
        torch.nn.init.normal_(p, std=0.05)
model.save_pretrained(out)
"#;
    let made = std::process::Command::new(python())
        .args(["-c", script])
        .arg(ws.path("llama"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let out = ws.path("from-peft.safetensors");
    hf_forward(&[(dir.clone(), ws.path("io.safetensors"), out.clone())]);
    let io = Io::read(&ws.path("io.safetensors"));
    let ours = logits_of(&load_causal_lm(&dir, &device).unwrap().model, &io, &device);
    let base = logits_of(&load_causal_lm(&ws.path("llama"), &device).unwrap().model, &io, &device);
    let vocab = ours.len() / (io.batch * io.len);
    let real = |i: usize| io.mask[i / vocab] == 1;
    let diff = max_abs_diff(&ours, &floats(&read(&out)["logits"]), real);
    assert!(diff < 1e-4, "peft's adapter: logits differ by {diff}");
    assert!(max_abs_diff(&ours, &base, real) > 1e-3, "the adapter changes the logits");
}

/// With `model.train_layers`, adapters go on the top blocks only; DPO's cache of the frozen
/// blocks' output stays valid under them.
#[test]
fn train_layers_puts_adapters_on_the_top_blocks_only() {
    let ws = workspace();
    for (stage, data) in [("sft", "sft.jsonl"), ("dpo", "prefs.jsonl")] {
        let out = format!("runs/{stage}-top");
        assert_ok(&ws.train(stage, "llama", data, &out, &["model.train_layers=1"]));
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(ws.path(&out).join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let targets = config["target_modules"].as_array().unwrap();
        assert_eq!(targets.len(), 7, "{stage}: the 7 linear layers of block 1: {targets:?}");
        assert!(targets.iter().all(|t| t.as_str().unwrap().starts_with("model.layers.1.")));
    }
}
