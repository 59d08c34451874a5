//! Broken model directories are clear errors (exit 2) that say what is wrong, and nothing panics.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rlhf::model::weights::{read_file, write_file};

/// A copy of fixture case 0's LM directory, to break.
fn copy_lm(tmp: &Path) -> PathBuf {
    let from = case("gpt2-0").join("lm");
    let to = tmp.join("lm");
    std::fs::create_dir(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
    to
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    let mut config = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, serde_json::to_string(&config).unwrap()).unwrap();
}

fn edit_weights(dir: &Path, edit: impl FnOnce(&mut rlhf::model::weights::NamedTensors)) {
    let path = dir.join("model.safetensors");
    let mut tensors = read_file(&path).unwrap();
    edit(&mut tensors);
    write_file(&path, &tensors).unwrap();
}

/// `rlhf model inspect` on `dir` must exit 2 with `needle` in its message.
fn assert_rejected(dir: &Path, needle: &str) {
    let out = rlhf(&["model", "inspect", "--model", dir.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unsupported_model_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_lm(tmp.path());
    edit_config(&dir, |c| {
        c.insert("model_type".into(), "bloom".into());
    });
    assert_rejected(
        &dir,
        "unsupported model_type `bloom` (supported: gpt2, llama, mistral, qwen2, bert)",
    );
}

#[test]
fn missing_and_extra_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_lm(tmp.path());
    edit_weights(&dir, |t| {
        t.remove("transformer.h.0.ln_1.weight");
    });
    assert_rejected(&dir, "missing tensor `transformer.h.0.ln_1.weight`");

    let dir = copy_lm(&tempfile::tempdir_in(tmp.path()).unwrap().keep());
    edit_weights(&dir, |t| {
        let extra = t["transformer.ln_f.bias"].clone();
        t.insert("transformer.h.0.attn.rotary.inv_freq".into(), extra);
    });
    assert_rejected(&dir, "`transformer.h.0.attn.rotary.inv_freq`");
}

#[test]
fn shape_mismatch_names_the_tensor_and_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_lm(tmp.path());
    let (vocab, width) = {
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        (config["vocab_size"].as_u64().unwrap(), config["n_embd"].as_u64().unwrap())
    };
    edit_config(&dir, |c| {
        c.insert("vocab_size".into(), (vocab + 1).into());
    });
    assert_rejected(
        &dir,
        &format!(
            "tensor `transformer.wte.weight` has shape [{vocab}, {width}], the model config implies [{}, {width}]",
            vocab + 1
        ),
    );
}

#[test]
fn tokenizer_larger_than_the_embedding() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_lm(tmp.path());
    std::fs::copy(fixtures().join("tokenizer/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    assert_rejected(&dir, "the tokenizer has 300 tokens but the model's embedding has only");
}

/// A safetensors file from a JSON header and `data` bytes.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn corrupt_or_lying_safetensors_headers_are_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_lm(tmp.path());
    let weights = dir.join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    let wte = |dtype: &str, shape: &str, offsets: &str| {
        format!(
            r#"{{"transformer.wte.weight":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#
        )
    };
    let mut overlapping = wte("F32", "[2]", "[0,8]");
    overlapping.pop();
    overlapping +=
        r#","transformer.wpe.weight":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"not a safetensors file at all".to_vec(), "the header claims"),
        (
            "a header longer than the file",
            safetensors(&wte("F32", "[1]", "[0,4]"), &[0; 4])[..20].to_vec(),
            "the header claims",
        ),
        ("not JSON", safetensors("{oops", &[]), "the header is not JSON"),
        ("truncated body", good[..good.len() - 100].to_vec(), "(truncated?)"),
        (
            "wrong dtype size",
            safetensors(&wte("F32", "[4]", "[0,8]"), &[0; 8]),
            "tensor `transformer.wte.weight`: shape [4] of F32 does not fill its offsets [0, 8]",
        ),
        (
            "a shape that overflows",
            safetensors(&wte("F32", "[4294967296,4294967296]", "[0,8]"), &[0; 8]),
            "tensor `transformer.wte.weight`: shape",
        ),
        (
            "an unknown dtype",
            safetensors(&wte("F128", "[1]", "[0,16]"), &[0; 16]),
            "tensor `transformer.wte.weight`: unknown variant `F128`",
        ),
        (
            "overlapping tensors",
            safetensors(&overlapping, &[0; 12]),
            "tensor `transformer.wpe.weight` overlaps tensor `transformer.wte.weight`",
        ),
        (
            "bytes outside every tensor",
            safetensors(&wte("F32", "[1]", "[0,4]"), &[0; 12]),
            "8 bytes after the last tensor belong to no tensor",
        ),
    ];
    for (what, bytes, needle) in cases {
        std::fs::write(&weights, bytes).unwrap();
        assert_rejected(&dir, "not a valid safetensors file");
        assert_rejected(&dir, needle);
        eprintln!("refused: {what}");
    }

    // NaN weights are named, not trained on.
    std::fs::write(&weights, &good).unwrap();
    edit_weights(&dir, |tensors| {
        let data = &tensors["transformer.h.0.mlp.c_fc.bias"];
        let mut values = floats(data);
        values[1] = f32::NAN;
        values[2] = f32::INFINITY;
        let shape = data.shape().to_vec();
        tensors.insert(
            "transformer.h.0.mlp.c_fc.bias".into(),
            burn::prelude::TensorData::new(values, shape),
        );
    });
    assert_rejected(&dir, "tensor `transformer.h.0.mlp.c_fc.bias`: 2 of");

    // A header that claims 10^12 floats (4 TB): refused from the header alone.
    let claim = wte("F32", "[1000000,1000000]", "[0,4000000000000]");
    std::fs::write(&weights, safetensors(&claim, &[0; 64])).unwrap();
    let mut inspect = std::process::Command::new(env!("CARGO_BIN_EXE_rlhf"));
    inspect.args(["model", "inspect", "--model"]).arg(&dir);
    let (out, extra_mib) = run_with_peak_memory(inspect);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("tensor `transformer.wte.weight`: its data ends at byte 4000000000000"),
        "{}",
        stderr(&out)
    );
    eprintln!("refusing a 4 TB claim took {extra_mib:.1} MiB above an idle process");
    assert!(extra_mib < 100.0, "{extra_mib} MiB");
}

#[test]
fn pickle_only_and_missing_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_lm(tmp.path());
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), b"pickle").unwrap();
    assert_rejected(&dir, "rlhf reads safetensors weights only");
    assert_rejected(&tmp.path().join("nope"), "no such model directory");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_rejected(&dir, "cannot read config.json");
}

#[test]
fn a_stage_expecting_a_language_model_rejects_a_reward_model() {
    let scalar = case("gpt2-0").join("scalar");
    let err = rlhf::model::load_causal_lm(&scalar, &cpu()).err().expect("rejected");
    assert_eq!(rlhf::error::exit_code(&err), 2);
    assert!(
        format!("{err:#}").contains("scalar (reward or value) model, not a causal language model")
    );
    let lm = case("gpt2-0").join("lm");
    let err = rlhf::model::load_scalar_model(&lm, &cpu()).err().expect("rejected");
    assert!(format!("{err:#}").contains("not a scalar model"));
}

#[test]
fn bf16_weights_load_as_f32() {
    // Half-precision checkpoints (most on the Hub) are widened on load.
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_lm(tmp.path());
    let path = dir.join("model.safetensors");
    let tensors = read_file(&path).unwrap();
    let mut views = Vec::new();
    let bf16: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, data)| {
            let bytes =
                floats(data).iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect();
            (name.clone(), bytes, data.shape().to_vec())
        })
        .collect();
    for (name, bytes, shape) in &bf16 {
        views.push((
            name.as_str(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), bytes)
                .unwrap(),
        ));
    }
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let loaded = read_file(&path).unwrap();
    let original = floats(&tensors["transformer.wte.weight"]);
    let widened = floats(&loaded["transformer.wte.weight"]);
    assert!(max_abs_diff(&original, &widened, |_| true) < 1e-2);
    let out = rlhf(&["model", "inspect", "--model", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}
