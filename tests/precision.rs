//! bf16 mixed precision (`train.precision`, `--precision`) against `transformers` under
//! `torch.autocast("cpu", dtype=torch.bfloat16)` on the decoder fixtures, and a short SFT run
//! whose loss tracks the f32 run's. Precision is process-wide, so every test in this binary
//! runs in bf16 (the f32 references are transformers' own, from the fixtures).

mod common;

use std::path::Path;

use common::*;
use rlhf::model::precision::{self, Precision};
use rlhf::model::{load_causal_lm, load_scalar_model};

/// Largest |Δ| over the real positions of `ours` against fixture tensor `name`.
fn error(io: &Io, ours: &[f32], name: &str) -> f32 {
    let per_row = ours.len() / io.batch;
    let per_token = per_row / io.len.max(1);
    let real = |i: usize| per_token == 0 || io.mask[i / per_token.max(1)] == 1;
    if name.starts_with("scores") {
        max_abs_diff(ours, &floats(&io.tensors[name]), |_| true)
    } else {
        max_abs_diff(ours, &floats(&io.tensors[name]), real)
    }
}

/// Ours in bf16 must sit as close to autocast as autocast sits to f32 (twice that, since both
/// round at slightly different places), and clearly away from f32: proof the products really
/// ran in bf16.
fn check(io: &Io, ours: &[f32], name: &str) -> Result<(), String> {
    let to_autocast = error(io, ours, &format!("{name}_bf16"));
    let to_f32 = error(io, ours, name);
    let autocast_to_f32 = error(io, &floats(&io.tensors[&format!("{name}_bf16")]), name);
    if to_autocast > 2.0 * autocast_to_f32 {
        return Err(format!(
            "{name}: max |Δ| to autocast {to_autocast} > 2 × autocast's own bf16 error {autocast_to_f32}"
        ));
    }
    if to_f32 < 1e-3 {
        return Err(format!("{name}: max |Δ| to f32 only {to_f32}: bf16 not in effect"));
    }
    Ok(())
}

#[test]
fn bf16_logits_and_scores_match_transformers_under_autocast() {
    let device = cpu();
    precision::set(Precision::Bf16, &device);
    let failures: Vec<String> = cases()
        .iter()
        .filter_map(|case| {
            let io = Io::read(&case.join("io.safetensors"));
            let lm = load_causal_lm(&case.join("lm"), &device).unwrap().model;
            let scalar = load_scalar_model(&case.join("scalar"), &device).unwrap().model;
            let (ids, batch) = io.inputs(&device);
            let scores: Vec<f32> = scalar.forward(ids, &batch).into_data().try_to_vec().unwrap();
            check(&io, &logits_of(&lm, &io, &device), "logits")
                .and_then(|()| check(&io, &scores, "scores"))
                .err()
                .map(|e| format!("{}: {e}", case.display()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A run's stderr says once that bf16 is emulated exactly when it ran in bf16 on a CPU without
/// LibTorch's bf16 kernels, and never otherwise.
fn check_emulation_warning(run: &std::process::Output, bf16: bool) {
    let stderr = String::from_utf8_lossy(&run.stderr);
    let expected = bf16 && !precision::cpu_has_bf16();
    assert_eq!(stderr.matches(precision::EMULATED_BF16).count(), expected as usize, "{stderr}");
}

fn sft_losses(dir: &Path, name: &str) -> Vec<f64> {
    let out = dir.join(name);
    let run = rlhf_in(dir, &["sft", "train", "--config", "sft.toml"])
        .args(["--set", &format!("output.dir={}", out.display())])
        .args(["--set", &format!("train.precision={name}")])
        .output()
        .unwrap();
    assert_ok(&run);
    check_emulation_warning(&run, name == "bf16");
    let lineage = std::fs::read_to_string(out.join("rlhf.json")).unwrap();
    assert!(lineage.contains(&format!("\"precision\": \"{name}\"")), "{lineage}");
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn a_bf16_sft_run_tracks_the_f32_run() {
    let dir = root().join("target/test-work/precision");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model");
    assert_ok(&init_model("tiny", &fixtures().join("tokenizer"), &model, &[]));
    let rows: Vec<serde_json::Value> = (0..64)
        .map(|i| {
            serde_json::json!({
                "prompt": format!("What is {i} plus {i}?"),
                "completion": format!("{i} plus {i} is {}.", 2 * i),
            })
        })
        .collect();
    write_jsonl(&dir.join("sft.jsonl"), &rows);
    let config = format!(
        "[model]\nbase = \"{}\"\n[data]\ntrain = \"sft.jsonl\"\nmax_len = 64\n\
         [train]\nmax_steps = 30\nbatch_size = 8\nlr = 1e-3\nwarmup_steps = 0\neval_every = 0\n\
         save_every = 0\nlog_every = 1\n[output]\noverwrite = true\n",
        model.display()
    );
    std::fs::write(dir.join("sft.toml"), config).unwrap();
    let f32 = sft_losses(&dir, "f32");
    let bf16 = sft_losses(&dir, "bf16");
    assert_eq!(f32.len(), bf16.len());
    let (first, last) = (f32[0], f32[f32.len() - 1]);
    assert!(last < 0.7 * first, "f32 did not learn: {first} → {last}");
    for (step, (a, b)) in f32.iter().zip(&bf16).enumerate() {
        assert!((a - b).abs() < 0.02 * a.max(1.0), "step {}: f32 loss {a}, bf16 {b}", step + 1);
    }
    assert_ne!(f32, bf16, "identical losses: bf16 not in effect");

    // `--precision` on a command that does not train, and on one that does (said once).
    write_jsonl(&dir.join("prompts.jsonl"), &[serde_json::json!({"prompt": "What is 1 plus 1?"})]);
    let generate = rlhf_in(&dir, &["--precision", "bf16", "generate", "--model"])
        .arg(&model)
        .args(["--data", "prompts.jsonl", "--template", "raw", "--max-new-tokens", "4", "--greedy"])
        .output()
        .unwrap();
    assert_ok(&generate);
    check_emulation_warning(&generate, true);
    let train = rlhf_in(&dir, &["--precision", "bf16", "sft", "train", "--config", "sft.toml"])
        .args(["--set", &format!("output.dir={}", dir.join("cli").display())])
        .args(["--set", "train.max_steps=1"])
        .output()
        .unwrap();
    assert_ok(&train);
    check_emulation_warning(&train, true);
}

/// `--precision int8` decodes a Llama through int8 weights (how close to f32: the step's unit
/// test and docs/performance.md), and a training command refuses it with the key named,
/// nothing written.
#[test]
fn int8_decodes_and_training_refuses_it() {
    let dir = root().join("target/test-work/precision-int8");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model");
    assert_ok(&init_model("llama-tiny", &fixtures().join("tokenizer"), &model, &[]));
    write_jsonl(&dir.join("prompts.jsonl"), &[serde_json::json!({"prompt": "What is 1 plus 1?"})]);
    let tokens = |precision: &str| {
        let out = format!("{precision}.jsonl");
        let run = rlhf_in(&dir, &["--precision", precision, "generate", "--model"])
            .arg(&model)
            .args(["--data", "prompts.jsonl", "--template", "raw", "--greedy"])
            .args(["--max-new-tokens", "8", "--ignore-eos", "--out", &out])
            .output()
            .unwrap();
        assert_ok(&run);
        let line = std::fs::read_to_string(dir.join(out)).unwrap();
        let row: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        row["completion_tokens"].as_u64().unwrap()
    };
    assert_eq!(tokens("int8"), 8);
    assert_eq!(tokens("f32"), 8);

    write_jsonl(&dir.join("sft.jsonl"), &[serde_json::json!({"prompt": "a", "completion": "b"})]);
    let config = format!(
        "[model]\nbase = \"{}\"\n[data]\ntrain = \"sft.jsonl\"\n[train]\nmax_steps = 1\n\
         [output]\ndir = \"run\"\n",
        model.display()
    );
    std::fs::write(dir.join("sft.toml"), config).unwrap();
    let train = rlhf_in(&dir, &["--precision", "int8", "sft", "train", "--config", "sft.toml"])
        .output()
        .unwrap();
    assert_eq!(train.status.code(), Some(2), "{}", stderr(&train));
    assert!(
        stderr(&train).contains("train.precision`: int8 is for decoding"),
        "{}",
        stderr(&train)
    );
    assert!(!dir.join("run").exists());
}
