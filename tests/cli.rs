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

/// Every command below `rlhf` as the words that name it (`["model", "init"]`), leaves only.
fn leaf_commands() -> Vec<Vec<String>> {
    fn walk(command: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
        let subcommands: Vec<&clap::Command> =
            command.get_subcommands().filter(|c| c.get_name() != "help").collect();
        if subcommands.is_empty() {
            out.push(path.to_vec());
        }
        for sub in subcommands {
            walk(sub, &[path, &[sub.get_name().to_string()]].concat(), out);
        }
    }
    let mut out = Vec::new();
    walk(&<rlhf::cli::Cli as clap::CommandFactory>::command(), &[], &mut out);
    out
}

/// Issue 48: no subcommand's help showed an example (ripgrep's and uv's do), and the global
/// options were mixed in with the command's own.
#[test]
fn every_command_shows_an_example_and_global_options_apart() {
    let leaves = leaf_commands();
    assert!(leaves.len() >= 20, "{leaves:?}");
    for path in leaves {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        let out = rlhf(&[&words[..], &["--help"]].concat());
        assert!(out.status.success(), "{words:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        let example = format!("\nExample:\n  rlhf {}", words.join(" "));
        assert!(help.contains(&example), "{words:?} --help has no example:\n{help}");
        let (own, global) = help
            .split_once("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("{words:?} --help has no global options heading:\n{help}"));
        assert!(!own.contains("--device") && global.contains("--device"), "{words:?}:\n{help}");
    }
}

/// Issue 48: options without a word of help (`ppo eval --max-new-tokens`, `--seed`), a top-level
/// `model` line silent on import and export, `model init --preset` naming three of five presets.
#[test]
fn every_option_has_help_and_the_lists_are_complete() {
    fn check(command: &clap::Command, path: &str) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(!help.trim().is_empty(), "`{path} --{id}` has no help");
        }
        for sub in command.get_subcommands() {
            check(sub, &format!("{path} {}", sub.get_name()));
        }
    }
    check(&<rlhf::cli::Cli as clap::CommandFactory>::command(), "rlhf");

    let help = String::from_utf8_lossy(&rlhf(&["--help"]).stdout).into_owned();
    let model = help.lines().find(|l| l.trim_start().starts_with("model ")).unwrap();
    assert!(model.contains("import") && model.contains("export"), "{model}");
    let init = String::from_utf8_lossy(&rlhf(&["model", "init", "--help"]).stdout).into_owned();
    for (name, _) in rlhf::model::preset::BUILT_IN {
        assert!(init.contains(name), "model init --help lacks the preset {name}:\n{init}");
    }
}

/// Issue 48: there was no way to see a stage's keys and defaults short of reading the source.
#[test]
fn print_config_shows_every_key_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    for stage in ["sft", "reward", "ppo", "dpo", "kto", "grpo", "moderate"] {
        let out = rlhf(&[stage, "train", "--print-config"]);
        assert_ok(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("[train]\nepochs = 1\n"), "{stage}:\n{text}");
        assert!(text.contains("[output]\n"), "{stage}:\n{text}");
        // What it prints is a config: read back through --config, it prints the same.
        let file = tmp.path().join(format!("{stage}.toml"));
        std::fs::write(&file, &text).unwrap();
        let again = rlhf(&[stage, "train", "--print-config", "--config", file.to_str().unwrap()]);
        assert_ok(&again);
        assert_eq!(String::from_utf8(again.stdout).unwrap(), text, "{stage}");
    }
    // A config file with --set and --force on top: the resolved config.
    let config = root().join("configs/sft.toml");
    let config = config.to_str().unwrap();
    let out = rlhf(&[
        "sft",
        "train",
        "--config",
        config,
        "--set",
        "train.lr=0.01",
        "--force",
        "--print-config",
    ]);
    assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\nlr = 0.01\n") && text.contains("\nmax_steps = 300\n"), "{text}");
    assert!(text.contains("\noverwrite = true\n"), "--force is output.overwrite: {text}");
    let out = rlhf(&["sft", "train", "--print-config", "--set", "train.lrr=1"]);
    assert_eq!(out.status.code(), Some(2));
    // The shipped GRPO configs have [[rewards]] tables whose unset keys must not be printed.
    for config in ["configs/grpo.toml", "configs/demo/grpo.toml"] {
        let config = root().join(config);
        let out = rlhf(&["grpo", "train", "--print-config", "--config", config.to_str().unwrap()]);
        assert_ok(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("rewards = [{ "), "{text}");
    }
}
