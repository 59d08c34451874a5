//! `rlhf tokenizer train` end to end: a byte-level BPE trained on every data form, read by
//! `transformers`' AutoTokenizer with the same ids and the ChatML template.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn shared_data(name: &str) -> std::path::PathBuf {
    root().join("../shared/data").join(name)
}

fn train(data: &[&Path], out: &Path, vocab: &str) -> std::process::Output {
    let mut args =
        vec!["tokenizer", "train", "--vocab-size", vocab, "--out", out.to_str().unwrap(), "--data"];
    args.extend(data.iter().map(|p| p.to_str().unwrap()));
    rlhf(&args)
}

/// One row of each data form, so every text field is read.
fn write_forms(path: &Path) {
    let rows = [
        json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Teal."}]}),
        json!({"prompt": "Two plus two?", "completion": "Four."}),
        json!({"text": "Plain text for continued pre-training."}),
        json!({"prompt": "Pick one", "chosen": "A good answer.", "rejected": "A bad answer."}),
        json!({"prompt": "Rank these", "responses": ["best", "middle", "worst"]}),
        json!({"text": "moderation row", "S": 0, "H": 1}),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn trained_tokenizer_encodes_the_same_in_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let forms = tmp.path().join("forms.jsonl");
    write_forms(&forms);
    let out = tmp.path().join("tok");
    let run = train(&[&shared_data("hh-harmless.train.jsonl"), &forms], &out, "2000");
    assert!(run.status.success(), "{}", stderr(&run));
    for file in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        assert!(out.join(file).is_file(), "{file}");
    }

    let texts = [
        "\n\nHuman: What household chemicals are dangerous to mix?\n\nAssistant: Bleach and ammonia.",
        "Unicode: naïve café — 東京 🚀, tabs\tand  double  spaces",
        "<|im_start|>user\nhi<|im_end|>\n",
        "Teal. Four. A good answer.",
    ];
    let messages =
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]);
    let request = tmp.path().join("request.json");
    std::fs::write(&request, json!({"texts": texts, "messages": messages}).to_string()).unwrap();
    let reply = tmp.path().join("reply.json");
    let status = Command::new(python())
        .arg(root().join("scripts/fixtures/hf_tokenize.py"))
        .args([&out, &request, &reply])
        .status()
        .unwrap();
    assert!(status.success());
    let theirs: Value = serde_json::from_slice(&std::fs::read(&reply).unwrap()).unwrap();

    let ours = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    for (text, expected) in texts.iter().zip(theirs["ids"].as_array().unwrap()) {
        let ids: Vec<u64> =
            ours.encode(*text, true).unwrap().get_ids().iter().map(|&i| i as u64).collect();
        let expected: Vec<u64> =
            expected.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(ids, expected, "{text:?}");
        assert_eq!(
            ours.decode(&ids.iter().map(|&i| i as u32).collect::<Vec<_>>(), false).unwrap(),
            *text
        );
    }
    let chat = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(theirs["chat"], chat, "ChatML template");
    let chat_ids: Vec<u64> =
        ours.encode(chat, true).unwrap().get_ids().iter().map(|&i| i as u64).collect();
    assert_eq!(serde_json::to_value(chat_ids).unwrap(), theirs["chat_ids"]);
    assert_eq!(ours.token_to_id("<|im_start|>"), Some(1), "special tokens are single ids");
    assert_eq!(theirs["eos_token_id"], 0);
    assert_eq!(theirs["pad_token_id"], 0);

    // A model can start from it.
    let model = tmp.path().join("model");
    let init = init_model("llama-tiny", &out, &model, &[]);
    assert!(init.status.success(), "{}", stderr(&init));
    assert!(model.join("chat_template.jinja").is_file(), "tokenizer files travel with the model");
}

#[test]
fn bad_rows_name_file_and_line_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tok");
    let data = tmp.path().join("bad.jsonl");
    for (content, needle) in [
        ("{\"text\": \"ok\"}\n\n{\"text\": oops}\n", "bad.jsonl:3: invalid JSON"),
        ("{\"text\": \"ok\"}\n{\"label\": 1}\n", "bad.jsonl:2: no text field"),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": 7}]}\n",
            "bad.jsonl:1: field `messages[0].content` must be a string",
        ),
        ("[1, 2]\n", "bad.jsonl:1: expected a JSON object"),
        ("\n", "bad.jsonl: no rows"),
    ] {
        std::fs::write(&data, content).unwrap();
        let run = train(&[&data], &out, "300");
        assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
        assert!(stderr(&run).contains(needle), "expected `{needle}` in {}", stderr(&run));
        assert!(!out.exists(), "nothing written");
    }
    std::fs::write(&data, "{\"text\": \"ok\"}\n").unwrap();
    let run = train(&[&data], &out, "100");
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("--vocab-size 100 is too small"), "{}", stderr(&run));
    let run = train(&[&tmp.path().join("missing.jsonl")], &out, "300");
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("cannot read"), "{}", stderr(&run));
}
