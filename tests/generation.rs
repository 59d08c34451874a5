//! Generation against `transformers` `generate`, the KV cache against full recomputation,
//! reproducible sampling, conversations that extend their cache, and `rlhf generate`.

mod common;

use std::path::Path;

use burn::prelude::*;
use common::*;
use rlhf::generate::{Finish, Generator, SamplingConfig};
use rlhf::model::kv_cache::KvCache;
use rlhf::model::{PaddedBatch, load_causal_lm};
use serde_json::Value;

fn greedy(max_new_tokens: usize) -> SamplingConfig {
    SamplingConfig { max_new_tokens, ..SamplingConfig::default() }
}

/// Any tokenizer will do where only ids matter.
fn tokenizer() -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_file(fixtures().join("tokenizer/tokenizer.json")).unwrap()
}

#[test]
fn greedy_batches_match_transformers_generate_token_for_token() {
    let _rng = rng_lock();
    let device = cpu();
    let tokenizer = tokenizer();
    for name in ["gpt2-0", "gpt2-2", "llama", "qwen2", "mistral"] {
        let dir = case(name).join("lm");
        let reference: Value =
            serde_json::from_slice(&std::fs::read(case(name).join("generate.json")).unwrap())
                .unwrap();
        let ids = |v: &Value| -> Vec<Vec<u32>> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect())
                .collect()
        };
        let prompts = ids(&reference["prompts"]);
        let loaded = load_causal_lm(&dir, &device).unwrap();
        let eos = reference["eos"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32);
        let generator =
            Generator::new(&loaded.model, &tokenizer, &loaded.config, &device).with_eos(eos);
        let max_new = reference["max_new_tokens"].as_u64().unwrap() as usize;
        let outputs = generator.generate(&prompts, &greedy(max_new), &mut |_, _| {}).unwrap();
        let theirs_all = ids(&reference["outputs"]);
        assert!(theirs_all[1].len() < max_new, "{name}: row 1 ends early in the fixture");
        for (row, (ours, theirs)) in outputs.iter().zip(theirs_all).enumerate() {
            assert_eq!(ours.tokens, theirs, "{name}, row {row}");
            assert_eq!(ours.log_probs.len(), ours.tokens.len());
            let ended = theirs.len() < max_new
                || reference["eos"].as_array().unwrap().contains(&Value::from(theirs[max_new - 1]));
            let expected = if ended { Finish::Eos } else { Finish::Length };
            assert_eq!(ours.finish, expected, "{name}, row {row}");
        }
    }
}

/// Logits of a left-padded batch fed all at once, and fed as a prefix then one token at a time
/// through the cache, must agree.
#[test]
fn cached_decoding_gives_the_same_logits_as_recomputing() {
    let device = cpu();
    for name in ["gpt2-0", "llama", "mistral"] {
        let model = load_causal_lm(&case(name).join("lm"), &device).unwrap().model;
        let ids = Tensor::<2, Int>::from_ints(
            [[0, 0, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18]],
            &device,
        );
        let mask = Tensor::<2, Int>::from_ints(
            [[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]],
            &device,
        );
        let full = model.forward(ids.clone(), &PaddedBatch::new(mask.clone()));

        let prefix = 3;
        let mut cache = KvCache::new(model.body.num_layers(), 4); // small: it must grow
        let batch = PaddedBatch::new(mask.clone().slice(s![.., 0..prefix]));
        let mut positions = batch.positions.clone().slice(s![.., prefix - 1..prefix]) + 1;
        let mut steps = vec![model.logits(model.hidden(
            ids.clone().slice(s![.., 0..prefix]),
            &batch,
            Some(&mut cache),
        ))];
        for t in prefix..8 {
            let batch =
                PaddedBatch::with_keys(mask.clone().slice(s![.., 0..t + 1]), positions.clone());
            steps.push(model.logits(model.hidden(
                ids.clone().slice(s![.., t..t + 1]),
                &batch,
                Some(&mut cache),
            )));
            positions = positions + 1;
        }
        let cached = Tensor::cat(steps, 1);
        let real = mask.clone().float().reshape([2, 8, 1]); // padding positions are arbitrary
        let diff: f32 = ((full - cached) * real).abs().max().into_scalar();
        assert!(diff < 1e-4, "{name}: cached and recomputed logits differ by {diff}");
    }
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let _rng = rng_lock();
    let device = cpu();
    let tokenizer = tokenizer();
    let loaded = load_causal_lm(&case("llama").join("lm"), &device).unwrap();
    let generator = Generator::new(&loaded.model, &tokenizer, &loaded.config, &device);
    let prompts = vec![vec![5, 6, 7], vec![8]];
    let run = |seed| {
        let sampling = SamplingConfig {
            do_sample: true,
            temperature: 1.5,
            top_k: 20,
            top_p: 0.95,
            repetition_penalty: 1.2,
            seed,
            ignore_eos: true,
            ..greedy(16)
        };
        generator.generate(&prompts, &sampling, &mut |_, _| {}).unwrap()
    };
    assert_eq!(run(4), run(4));
    assert_ne!(run(4), run(5));
}

/// K copies of a prompt share one prefill and fan out: greedy copies agree with the prompt
/// generated alone (and with `transformers`), and sampled copies differ from each other.
#[test]
fn repeated_prompts_share_a_prefill_and_still_decode_independently() {
    let _rng = rng_lock();
    let device = cpu();
    let tokenizer = tokenizer();
    let reference: Value =
        serde_json::from_slice(&std::fs::read(case("llama").join("generate.json")).unwrap())
            .unwrap();
    let prompt = |i: usize| -> Vec<u32> {
        let ids = reference["prompts"][i].as_array().unwrap();
        ids.iter().map(|t| t.as_u64().unwrap() as u32).collect()
    };
    let loaded = load_causal_lm(&case("llama").join("lm"), &device).unwrap();
    let generator = Generator::new(&loaded.model, &tokenizer, &loaded.config, &device);
    let (a, b) = (prompt(0), prompt(1));
    let prompts = vec![a.clone(), b.clone(), a.clone(), a.clone(), b.clone()];
    let greedy = SamplingConfig { ignore_eos: true, ..greedy(8) };
    let together = generator.generate(&prompts, &greedy, &mut |_, _| {}).unwrap();
    let alone = generator.generate(&[a, b], &greedy, &mut |_, _| {}).unwrap();
    for (row, source) in [0, 1, 0, 0, 1].into_iter().enumerate() {
        assert_eq!(together[row].tokens, alone[source].tokens, "row {row}");
    }
    let sampled = SamplingConfig { do_sample: true, temperature: 2.0, seed: 3, ..greedy };
    let copies = generator.generate(&prompts[2..4], &sampled, &mut |_, _| {}).unwrap();
    assert_ne!(copies[0].tokens, copies[1].tokens, "each copy samples its own tokens");
}

/// A conversation's second reply, computed from the cache, equals generating from the whole
/// conversation at once.
#[test]
fn conversations_extend_their_cache() {
    let _rng = rng_lock();
    let device = cpu();
    let tokenizer = tokenizer();
    for name in ["gpt2-0", "llama"] {
        let loaded = load_causal_lm(&case(name).join("lm"), &device).unwrap();
        let generator = Generator::new(&loaded.model, &tokenizer, &loaded.config, &device);
        let sampling = SamplingConfig { ignore_eos: true, ..greedy(5) };
        let mut conversation = generator.conversation();
        let mut streamed = Vec::new();
        let first = generator
            .reply(&mut conversation, &[5, 6, 7], &sampling, &mut |_, t| streamed.push(t))
            .unwrap();
        assert_eq!(streamed, first.tokens, "streamed token by token");
        let second =
            generator.reply(&mut conversation, &[9, 10], &sampling, &mut |_, _| {}).unwrap();
        let history: Vec<u32> = [vec![5, 6, 7], first.tokens.clone(), vec![9, 10]].concat();
        let at_once = generator.generate(&[history], &sampling, &mut |_, _| {}).unwrap();
        assert_eq!(second.tokens, at_once[0].tokens, "{name}");
        assert_eq!(conversation.len(), 3 + 5 + 2 + 5);
    }
}

/// After an edit (a retried answer, an undone turn, a changed start), `reply_to` cuts the cache
/// back to the prefix it shares with the new tokens, and the reply equals generating from the
/// new tokens at once: keys and values past the cut are never read.
#[test]
fn replies_to_edited_conversations_reuse_the_common_prefix() {
    let _rng = rng_lock();
    let device = cpu();
    let tokenizer = tokenizer();
    for name in ["gpt2-0", "llama"] {
        let loaded = load_causal_lm(&case(name).join("lm"), &device).unwrap();
        let generator = Generator::new(&loaded.model, &tokenizer, &loaded.config, &device);
        let sampling = SamplingConfig { ignore_eos: true, ..greedy(4) };
        let mut conversation = generator.conversation();
        let mut reply_to = |tokens: &[u32]| {
            let mut stop = |_| std::ops::ControlFlow::Continue(());
            generator.reply_to(&mut conversation, tokens, &sampling, &mut stop).unwrap()
        };
        let (first, cached) = reply_to(&[5, 6, 7, 8]);
        assert_eq!(cached, 0);
        let extended: Vec<u32> = [&[5, 6, 7, 8][..], &first.tokens, &[9]].concat();
        let edits = [
            (extended.clone(), 8),       // a new turn: everything before it is cached
            (vec![5, 6, 7, 8], 3),       // a retry: the prompt again (its last token is re-fed)
            (vec![5, 6, 11, 12, 13], 2), // an edit in the middle
            (vec![4, 6, 7], 0),          // a changed first token
        ];
        for (tokens, expected_cached) in edits {
            let (reply, cached) = reply_to(&tokens);
            assert_eq!(cached, expected_cached, "{name}: {tokens:?}");
            let at_once = generator
                .generate(std::slice::from_ref(&tokens), &sampling, &mut |_, _| {})
                .unwrap();
            assert_eq!(reply.tokens, at_once[0].tokens, "{name}: {tokens:?}");
        }
        // A callback that breaks stops the reply after that token.
        let mut stop_after_two = {
            let mut seen = 0;
            move |_| {
                seen += 1;
                if seen == 2 {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            }
        };
        let (stopped, _) =
            generator.reply_to(&mut conversation, &[5, 6], &sampling, &mut stop_after_two).unwrap();
        assert_eq!((stopped.tokens.len(), stopped.finish), (2, Finish::Cancelled), "{name}");
    }
}

#[test]
fn running_past_the_context_window_is_an_error_not_a_panic() {
    let _rng = rng_lock();
    let device = cpu();
    let tokenizer = tokenizer();
    let loaded = load_causal_lm(&case("gpt2-0").join("lm"), &device).unwrap();
    let window = loaded.config.context_window();
    let generator = Generator::new(&loaded.model, &tokenizer, &loaded.config, &device);
    let sampling = greedy(window);
    let err = generator.generate(&[vec![5]], &sampling, &mut |_, _| {}).unwrap_err();
    assert!(format!("{err:#}").contains("exceed the model's context window"), "{err:#}");
    let mut conversation = generator.conversation();
    assert!(generator.reply(&mut conversation, &[5], &sampling, &mut |_, _| {}).is_err());
}

fn generate(model: &Path, data: &Path, extra: &[&str]) -> std::process::Output {
    let mut args =
        vec!["generate", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    rlhf(&args)
}

#[test]
fn generate_command_writes_one_line_per_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let tok = fixtures().join("tokenizer");
    let init = init_model("tiny", &tok, &model, &[]);
    assert!(init.status.success(), "{}", stderr(&init));
    let data = tmp.path().join("prompts.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"Hello there\"}\n{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}]}\n{\"prompt\": \"The quick brown fox\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("out.jsonl");
    let run = generate(
        &model,
        &data,
        &[
            "--out",
            out.to_str().unwrap(),
            "--max-new-tokens",
            "6",
            "--batch-size",
            "2",
            "--ignore-eos",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("tokens/s"), "{}", stderr(&run));
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["prompt"], "Hello there", "input order kept");
    assert_eq!(lines[1]["prompt"][1]["content"], "Hi");
    for line in &lines {
        assert_eq!(line["completion_tokens"], 6);
        assert_eq!(line["finish_reason"], "length");
        assert!(line["completion"].is_string());
    }
    // Same seed, same text; to stdout when --out is absent.
    let again =
        generate(&model, &data, &["--max-new-tokens", "6", "--batch-size", "2", "--ignore-eos"]);
    let again: Vec<Value> = String::from_utf8(again.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(again, lines);

    // A stop string ends the row and is cut from the text.
    let first_word =
        lines[0]["completion"].as_str().unwrap().chars().skip(1).take(2).collect::<String>();
    if !first_word.trim().is_empty() {
        let cut = generate(
            &model,
            &data,
            &["--max-new-tokens", "6", "--ignore-eos", "--stop", &first_word],
        );
        let cut: Vec<Value> = String::from_utf8(cut.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(cut[0]["finish_reason"], "stop");
        assert!(!cut[0]["completion"].as_str().unwrap().contains(&first_word));
    }
}

#[test]
fn generate_rejects_bad_prompts_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("prompts.jsonl");
    let model = case("gpt2-0").join("lm"); // weights only: no tokenizer.json
    std::fs::write(
        &data,
        "{\"prompt\": \"ok\"}\n{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}\n",
    )
    .unwrap();
    let tok = fixtures().join("tokenizer");
    let dir = tmp.path().join("model");
    assert!(init_model("llama-tiny", &tok, &dir, &[]).status.success());
    let run = generate(&dir, &data, &[]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("prompts.jsonl:2: field `messages[0].role`: unknown role \"bot\""),
        "{}",
        stderr(&run)
    );

    let run = generate(&model, &data, &[]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("no tokenizer.json"), "{}", stderr(&run));

    let run = generate(&dir, &data, &["--sample", "--top-p", "0"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("top_p must be in (0, 1]"), "{}", stderr(&run));
    std::fs::write(&data, "{\"prompt\": \"\"}\n").unwrap();
    let run = generate(&dir, &data, &["--template", "raw"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("prompts.jsonl:1: the prompt encodes to no tokens"),
        "{}",
        stderr(&run)
    );
    let run = generate(&dir, &data, &["--template", "fancy"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("unknown chat template `fancy`"), "{}", stderr(&run));
}

/// Issue 48: `rlhf generate --temperature 1.5` returned the greedy text, without a word,
/// unless `--sample` was given too. A temperature (or top-p, top-k) given now means sampling.
#[test]
fn a_temperature_alone_means_sampling_in_generate() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let init = init_model("tiny", &fixtures().join("tokenizer"), &model, &[]);
    assert!(init.status.success(), "{}", stderr(&init));
    let data = tmp.path().join("prompts.jsonl");
    std::fs::write(&data, "{\"prompt\": \"Hello there\"}\n{\"prompt\": \"The quick brown fox\"}\n")
        .unwrap();
    let completions = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["--max-new-tokens", "12", "--ignore-eos", "--seed", "3"];
        args.extend_from_slice(extra);
        let run = generate(&model, &data, &args);
        assert!(run.status.success(), "{extra:?}: {}", stderr(&run));
        String::from_utf8(run.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["completion"].to_string())
            .collect()
    };
    let greedy = completions(&[]);
    assert_eq!(completions(&["--greedy"]), greedy);
    assert_eq!(completions(&["--temperature", "0"]), greedy, "temperature 0 means greedy");
    let hot = completions(&["--temperature", "1.5"]);
    assert_ne!(hot, greedy, "a temperature alone must sample");
    assert_eq!(completions(&["--sample", "--temperature", "1.5"]), hot, "--sample still works");
    assert_ne!(completions(&["--top-k", "50"]), greedy, "a top-k alone must sample");
    let both = generate(&model, &data, &["--greedy", "--temperature", "0.7"]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}

/// Issue 48: `rlhf generate` had no `--prompt` for one prompt without a file, and did not read
/// `--data -` from stdin.
#[test]
fn generate_takes_prompts_from_the_command_line_or_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let init = init_model("tiny", &fixtures().join("tokenizer"), &model, &[]);
    assert!(init.status.success(), "{}", stderr(&init));
    let rows = "{\"prompt\": \"Hello there\"}\n{\"prompt\": \"The quick brown fox\"}\n";
    let data = tmp.path().join("prompts.jsonl");
    std::fs::write(&data, rows).unwrap();
    let flags = ["--max-new-tokens", "5", "--ignore-eos"];
    let from_file = generate(&model, &data, &flags);
    assert!(from_file.status.success(), "{}", stderr(&from_file));

    let model_arg = model.to_str().unwrap();
    let from_flags = rlhf(
        &[
            &["generate", "--model", model_arg, "--prompt", "Hello there"],
            &["--prompt", "The quick brown fox"][..],
            &flags[..],
        ]
        .concat(),
    );
    assert!(from_flags.status.success(), "{}", stderr(&from_flags));
    assert_eq!(from_flags.stdout, from_file.stdout);

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args([&["generate", "--model", model_arg, "--data", "-"][..], &flags[..]].concat())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), rows.as_bytes()).unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert!(from_stdin.status.success(), "{}", stderr(&from_stdin));
    assert_eq!(from_stdin.stdout, from_file.stdout);

    let neither = rlhf(&["generate", "--model", model_arg]);
    assert_eq!(neither.status.code(), Some(2));
    let both = generate(&model, &data, &["--prompt", "Hi"]);
    assert_eq!(both.status.code(), Some(2));
}
