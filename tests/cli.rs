//! The `rlhf` binary end to end: help, exit codes, devices, `model init` and `model inspect`.

mod common;

use std::path::Path;

use common::*;
use rlhf::model::PaddedBatch;

const SUBCOMMANDS: [&str; 10] =
    ["sft", "reward", "ppo", "dpo", "kto", "moderate", "chat", "generate", "tokenizer", "model"];

#[test]
fn help_lists_every_subcommand_and_each_has_its_own() {
    let out = rlhf(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for name in SUBCOMMANDS {
        assert!(help.contains(&format!("  {name} ")), "--help lacks `{name}`:\n{help}");
        let sub = rlhf(&[name, "--help"]);
        assert!(sub.status.success(), "`rlhf {name} --help` failed");
    }
    for nested in [
        ["sft", "train"],
        ["sft", "eval"],
        ["reward", "score"],
        ["ppo", "eval"],
        ["dpo", "eval"],
        ["kto", "train"],
        ["moderate", "score"],
        ["model", "init"],
    ] {
        assert!(rlhf(&[nested[0], nested[1], "--help"]).status.success(), "{nested:?}");
    }
}

#[test]
fn bad_arguments_exit_2() {
    let out = rlhf(&["--device", "gpu", "model", "inspect", "--model", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown device `gpu`"), "{}", stderr(&out));
    assert_eq!(
        rlhf(&["--threads", "0", "model", "inspect", "--model", "x"]).status.code(),
        Some(2)
    );
    assert_eq!(rlhf(&["sft", "train"]).status.code(), Some(2), "missing --config");
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    if tch::Cuda::is_available() {
        return; // on a GPU machine the same command must simply work; see the next line
    }
    let model = case("gpt2-0").join("lm");
    let out = rlhf(&["--device", "cuda", "model", "inspect", "--model", model.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no CUDA device is visible"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
}

fn init(out: &Path, extra: &[&str]) -> std::process::Output {
    init_model("tiny", &fixtures().join("tokenizer"), out, extra)
}

#[test]
fn model_init_writes_a_checkpoint_transformers_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("base");
    let out = init(&dir, &["--set", "n_layer=3", "--seed", "7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "rlhf.json",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["n_layer"], 3, "--set applied");
    assert_eq!(config["vocab_size"], 300, "vocabulary from the tokenizer");
    assert_eq!(config["eos_token_id"], 0, "<|endoftext|> from tokenizer_config.json");
    let lineage = rlhf::checkpoint::Lineage::read(&dir).unwrap();
    assert_eq!(lineage.stage, "init");
    assert_eq!(lineage.config["overrides"][0], "n_layer=3", "resolved config recorded");

    // Same seed, same weights; transformers computes the same logits from them.
    let again = tmp.path().join("again");
    assert!(init(&again, &["--set", "n_layer=3", "--seed", "7"]).status.success());
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        std::fs::read(again.join("model.safetensors")).unwrap()
    );

    let io = case("gpt2-0").join("io.safetensors"); // ids < 50 fit any vocabulary here
    let reference = tmp.path().join("hf.out");
    hf_forward(&[(dir.clone(), io.clone(), reference.clone())]);
    let device = cpu();
    let model = rlhf::model::load_causal_lm(&dir, &device).unwrap().model;
    let inputs = read(&io);
    let mask = int_tensor::<2>(&inputs["attention_mask"], &device);
    let real: Vec<i64> = inputs["attention_mask"].clone().convert::<i64>().try_to_vec().unwrap();
    let ours: Vec<f32> = model
        .forward(int_tensor(&inputs["input_ids"], &device), &PaddedBatch::new(mask))
        .into_data()
        .try_to_vec()
        .unwrap();
    let diff = max_abs_diff(&ours, &floats(&read(&reference)["logits"]), |i| real[i / 300] == 1);
    assert!(diff < 1e-4, "max |Δlogit| = {diff}");

    let inspect = rlhf(&["model", "inspect", "--model", dir.to_str().unwrap(), "--json"]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let report: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(report["stage"], "init");
    assert_eq!(report["tokenizer_vocab"], 300);
}

#[test]
fn model_init_rejects_unknown_keys_and_existing_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let out = init(&dir, &["--set", "n_layers=3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("key `n_layers`"), "{}", stderr(&out));
    assert!(!dir.exists(), "nothing half-written");

    let out = init(&dir, &["--set", "n_embd=many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("key `n_embd` (from --set n_embd=many)"), "{}", stderr(&out));

    let preset = tmp.path().join("mine.toml");
    std::fs::write(&preset, "model_type = \"gpt2\"\nn_layer = 1\nn_head = 3\nn_embd = 64\n")
        .unwrap();
    let out = init_model(preset.to_str().unwrap(), &fixtures().join("tokenizer"), &dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("n_embd (64) must be divisible by n_head (3)"),
        "{}",
        stderr(&out)
    );

    assert!(init(&dir, &[]).status.success());
    let out = init(&dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert!(init(&dir, &["--force"]).status.success());
}

/// Issue 48: an unknown config key got the list of every key but no "did you mean", and a
/// negative count was refused with Rust's `expected usize`.
#[test]
fn config_errors_suggest_the_key_and_name_the_type_in_words() {
    let config = root().join("configs/sft.toml");
    let train =
        |set: &str| rlhf(&["sft", "train", "--config", config.to_str().unwrap(), "--set", set]);
    let out = train("train.lrr=1e-3");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("\nhint: did you mean `train.lr`?"), "{}", stderr(&out));
    let out = train("train.epochs=-1");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("key `train.epochs` (from --set train.epochs=-1): invalid value: integer `-1`, expected a whole number ≥ 0"),
        "{}",
        stderr(&out)
    );
    // Presets go through the same reader.
    let tmp = tempfile::tempdir().unwrap();
    let out = init(&tmp.path().join("m"), &["--set", "n_layers=3"]);
    assert!(stderr(&out).contains("hint: did you mean `n_layer`?"), "{}", stderr(&out));
}
