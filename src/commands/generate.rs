//! `rlhf generate`: completions for a JSONL file of prompts (or stdin's, or `--prompt`'s).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::bad_input;
use crate::checkpoint::write_file_atomically;
use crate::cli::GenerateArgs;
use crate::data::jsonl::{Row, parse_rows};
use crate::data::prompts::{encode_prompts, read_prompts};
use crate::data::template::ChatTemplate;
use crate::generate::Generator;
use crate::model::load_causal_lm;

pub fn generate(args: &GenerateArgs, device: &Device) -> Result<()> {
    if args.batch_size == 0 {
        return Err(bad_input!("--batch-size must be at least 1"));
    }
    let sampling = args.sampling.config(&args.model)?;
    let template = ChatTemplate::resolve(args.template.as_deref(), &args.model)?;
    let loaded = load_causal_lm(&args.model, device)?;
    let tokenizer = loaded.tokenizer.as_ref().ok_or_else(|| {
        bad_input!("{}: no tokenizer.json, so prompts cannot be encoded", args.model.display())
    })?;

    // Every row is read, rendered and encoded before any generation starts.
    let room = loaded.config.context_window().saturating_sub(sampling.max_new_tokens);
    if room == 0 {
        return Err(bad_input!(
            "--max-new-tokens {} leaves no room for a prompt in the {}-token context window",
            sampling.max_new_tokens,
            loaded.config.context_window()
        ));
    }
    let (rows, truncated) = match args.data.as_deref() {
        Some(path) if path == Path::new("-") => {
            let mut bytes = Vec::new();
            std::io::stdin().lock().read_to_end(&mut bytes).context("reading stdin")?;
            let rows = parse_rows(&bytes).map_err(|e| bad_input!("stdin{e}"))?;
            if rows.is_empty() {
                return Err(bad_input!(
                    "stdin: no prompts\nhint: pipe JSONL rows, or use --prompt TEXT"
                ));
            }
            encode_prompts(rows, "stdin", tokenizer, &template, room)?
        }
        Some(path) => read_prompts(path, tokenizer, &template, room)?,
        None => {
            let rows = args
                .prompt
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    let fields =
                        serde_json::Map::from_iter([("prompt".into(), text.clone().into())]);
                    Row { line: i + 1, fields }
                })
                .collect();
            encode_prompts(rows, "--prompt", tokenizer, &template, room)?
        }
    };
    let prompts: Vec<&[u32]> = rows.iter().map(|p| p.ids.as_slice()).collect();
    if truncated > 0 {
        eprintln!(
            "warning: {truncated} prompt(s) cut from the left to {room} tokens so that {} new tokens fit the context window",
            sampling.max_new_tokens
        );
    }

    let generator = Generator::new(&loaded.model, tokenizer, &loaded.config, device)
        .with_generation_config(&args.model)
        .prepared();
    // Similar lengths decode together (less padding); output keeps the input's order.
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let progress = progress_bar(prompts.len());
    let started = Instant::now();
    let mut results = vec![None; prompts.len()];
    let mut new_tokens = 0usize;
    for chunk in order.chunks(args.batch_size) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].to_vec()).collect();
        let mut on_token = |_, _| {
            new_tokens += 1;
        };
        let generations = generator.generate(&batch, &sampling, &mut on_token)?;
        for (&i, generation) in chunk.iter().zip(generations) {
            results[i] = Some(generation);
        }
        progress.inc(chunk.len() as u64);
        let rate = new_tokens as f64 / started.elapsed().as_secs_f64();
        progress.set_message(format!("{rate:.0} tokens/s"));
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();

    let mut out = String::new();
    for ((row, prompt), generation) in rows.iter().zip(&prompts).zip(results) {
        let generation = generation.expect("every prompt generated");
        let mut completion = tokenizer
            .decode(&generation.tokens, true)
            .map_err(|e| anyhow::anyhow!("decoding a completion: {e}"))?;
        if let Some(cut) = sampling.stop.iter().filter_map(|s| completion.find(s.as_str())).min() {
            completion.truncate(cut);
        }
        let line = json!({
            "prompt": row.source,
            "completion": completion,
            "prompt_tokens": prompt.len(),
            "completion_tokens": generation.tokens.len(),
            "finish_reason": generation.finish,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    match &args.out {
        Some(path) => write_file_atomically(path, &out)?,
        None => std::io::stdout().lock().write_all(out.as_bytes()).context("writing to stdout")?,
    }
    eprintln!(
        "generated {new_tokens} tokens for {} prompts in {seconds:.2} s ({:.1} tokens/s)",
        prompts.len(),
        new_tokens as f64 / seconds
    );
    Ok(())
}

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} prompts  {msg}  {elapsed}")
            .expect("static template"),
    );
    bar
}
