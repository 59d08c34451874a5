//! The BERT family against `transformers`: hidden states, pooled vectors and classifier logits
//! on padded two-segment batches, for random tiny classifiers and the real all-MiniLM-L6-v2;
//! WordPiece ids; saved classifiers reloading in `transformers`.

mod common;

use std::path::Path;

use burn::prelude::*;
use common::*;
use rlhf::model::auto::load_encoder_classifier;
use rlhf::model::pretrained::save_classifier;
use rlhf::model::weights::{NamedTensors, write_file};

const TOLERANCE: f32 = 1e-4;

struct Io {
    tensors: NamedTensors,
}

impl Io {
    fn read(path: &Path) -> Self {
        Self { tensors: read(path) }
    }

    fn ints(&self, name: &str, device: &Device) -> Tensor<2, Int> {
        int_tensor(&self.tensors[name], device)
    }

    fn assert_close(&self, name: &str, ours: Tensor<2>, what: &str) {
        let diff = max_abs_diff(&floats(&ours.into_data()), &floats(&self.tensors[name]), |_| true);
        assert!(diff < TOLERANCE, "{what}: {name} differs by {diff}");
    }
}

fn bert_dir(name: &str) -> std::path::PathBuf {
    fixtures().join("bert").join(name)
}

#[test]
fn tiny_classifiers_match_transformers_on_padded_two_segment_batches() {
    let device = cpu();
    for name in ["bert-multi", "bert-scalar"] {
        let io = Io::read(&bert_dir(name).join("io.safetensors"));
        let loaded = load_encoder_classifier(&bert_dir(name).join("model"), None, &device).unwrap();
        let (ids, types, mask) = (
            io.ints("input_ids", &device),
            io.ints("token_type_ids", &device),
            io.ints("attention_mask", &device),
        );
        let model = &loaded.model;
        let hidden = model.body.forward(ids.clone(), types.clone(), mask.clone());
        let [b, t, d] = hidden.dims();
        io.assert_close("hidden", hidden.clone().reshape([b * t, d]), name);
        io.assert_close("pooled", model.body.pool(hidden, mask.clone()), name);
        io.assert_close("logits", model.forward(ids, types, mask), name);
    }
}

#[test]
fn minilm_tokenizes_and_encodes_like_transformers() {
    let device = cpu();
    let dir = root().join("models/minilm");
    assert!(dir.join("model.safetensors").is_file(), "models/minilm missing: run scripts/setup.sh");
    let io = Io::read(&bert_dir("minilm").join("io.safetensors"));
    let texts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bert_dir("minilm").join("texts.json")).unwrap(),
    )
    .unwrap();
    let loaded = load_encoder_classifier(&dir, Some(1), &device).unwrap();
    let tokenizer = loaded.tokenizer.as_ref().expect("MiniLM ships tokenizer.json");
    let expected_ids: Vec<i64> =
        io.tensors["input_ids"].clone().convert::<i64>().try_to_vec().unwrap();
    let expected_types: Vec<i64> =
        io.tensors["token_type_ids"].clone().convert::<i64>().try_to_vec().unwrap();
    let t = io.tensors["input_ids"].shape()[1];
    for (row, (prompt, reply)) in texts["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(texts["replies"].as_array().unwrap())
        .enumerate()
    {
        let encoding =
            tokenizer.encode((prompt.as_str().unwrap(), reply.as_str().unwrap()), true).unwrap();
        let n = encoding.get_ids().len();
        let ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i as i64).collect();
        let types: Vec<i64> = encoding.get_type_ids().iter().map(|&i| i as i64).collect();
        assert_eq!(ids, expected_ids[row * t..row * t + n], "ids of row {row}");
        assert_eq!(types, expected_types[row * t..row * t + n], "token types of row {row}");
    }
    let (ids, types, mask) = (
        io.ints("input_ids", &device),
        io.ints("token_type_ids", &device),
        io.ints("attention_mask", &device),
    );
    let hidden = loaded.model.body.forward(ids, types, mask.clone());
    let [b, t, d] = hidden.dims();
    io.assert_close("hidden", hidden.clone().reshape([b * t, d]), "minilm");
    io.assert_close("pooled", loaded.model.body.pool(hidden, mask), "minilm");
}

#[test]
fn saved_classifiers_reload_in_transformers_with_the_same_logits() {
    let device = cpu();
    let tmp = tempfile::tempdir().unwrap();
    // A fresh three-label head on the pretrained MiniLM body, saved as a multi-label classifier.
    let loaded = load_encoder_classifier(&root().join("models/minilm"), Some(3), &device).unwrap();
    let out = tmp.path().join("classifier");
    std::fs::create_dir(&out).unwrap();
    let labels: Vec<String> = ["sexual", "hate", "violence"].map(String::from).to_vec();
    save_classifier(
        &loaded.model,
        &loaded.config,
        &labels,
        Some("multi_label_classification"),
        Some(&root().join("models/minilm")),
        &out,
    )
    .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["id2label"]["1"], "hate");
    assert_eq!(config["problem_type"], "multi_label_classification");

    let ids: Vec<i64> =
        vec![101, 7592, 2088, 102, 2129, 102, 0, 0, 101, 2023, 2003, 1037, 3231, 1012, 2017, 102];
    let mask: Vec<i64> =
        ids.iter().enumerate().map(|(i, &id)| i64::from(id != 0 || i % 8 == 0)).collect();
    let mut io = NamedTensors::new();
    io.insert("input_ids".into(), TensorData::new(ids.clone(), [2, 8]));
    io.insert("attention_mask".into(), TensorData::new(mask.clone(), [2, 8]));
    let (io_path, hf_path) = (tmp.path().join("io.safetensors"), tmp.path().join("hf.safetensors"));
    write_file(&io_path, &io).unwrap();
    hf_forward(&[(out.clone(), io_path, hf_path.clone())]);
    let reloaded = load_encoder_classifier(&out, None, &device).unwrap();
    let ints = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [2, 8]), &device);
    let logits = reloaded.model.forward(ints(ids), Tensor::zeros([2, 8], &device), ints(mask));
    let diff =
        max_abs_diff(&floats(&logits.into_data()), &floats(&read(&hf_path)["logits"]), |_| true);
    assert!(diff < TOLERANCE, "saved classifier: logits differ by {diff}");
}

#[test]
fn bad_encoder_directories_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bert");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(bert_dir("bert-multi").join("model/config.json"), dir.join("config.json"))
        .unwrap();
    std::fs::copy(
        bert_dir("bert-multi").join("model/model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["intermediate_size"] = serde_json::json!(999);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let out = rlhf(&["model", "inspect", "--model", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("intermediate.dense.weight` has shape"), "{}", stderr(&out));
    let minilm = root().join("models/minilm");
    let out = rlhf(&["generate", "--model", minilm.to_str().unwrap(), "--data", "x.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("a BERT encoder is not a language model"), "{}", stderr(&out));
    config["model_type"] = serde_json::json!("deberta-v2");
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let out = rlhf(&["model", "inspect", "--model", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "unsupported model_type `deberta-v2` (supported: gpt2, llama, mistral, qwen2, bert)"
        ),
        "{}",
        stderr(&out)
    );
}
