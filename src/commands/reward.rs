//! `rlhf reward eval` and `rlhf reward score`: a reward model measured on comparisons, and
//! its score of each row, both at the length the model was trained at (`reward::length`).

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use serde_json::{Map, Value, json};

use crate::bad_input;
use crate::cli::{RewardEvalArgs, ScoreArgs};
use crate::data::chat::{Message, Role, parse_messages};
use crate::data::jsonl::read_rows;
use crate::data::preference::{Comparison, prompt_field};
use crate::data::sft::{FitReport, Truncation};
use crate::model::reward::RewardModel;
use crate::reward::length::ReadLength;
use crate::reward::pairs::{PairMetrics, encode_file, flat_sequences};

/// `rlhf reward eval`: pairwise accuracy and mean margin on comparisons, read at the length
/// the model was trained at unless `--max-len` says otherwise.
pub fn eval(args: &RewardEvalArgs, device: &Device) -> Result<()> {
    let RewardEvalArgs { eval: args, length } = args;
    let model = RewardModel::load(&args.model, device)?;
    let length = ReadLength::resolve(&args.model, length.max_len, model.window())?;
    let encoder = model.encoder_at(length.max_len, length.truncation)?;
    let (encoded, fit) = encode_file(&args.data, &encoder)?;
    if encoded.is_empty() {
        return Err(bad_input!(
            "{}: no comparison fits {}\nhint: a longer --max-len (0: the whole context window)",
            args.data.display(),
            length.describe()
        ));
    }
    let sequences = flat_sequences(&encoded);
    let scores = model.score_sequences(&sequences, device);
    let metrics = PairMetrics::of(&encoded, &scores, 0.0);
    let report = json!({
        "accuracy": metrics.accuracy,
        "mean_margin": metrics.mean_margin,
        "loss": metrics.loss,
        "comparisons": encoded.len(),
        "pairs": metrics.pairs,
        "max_len": length.max_len,
        "max_len_from": length.source(),
        "truncation": length.truncation,
        "truncated": fit.truncated,
        "dropped": fit.dropped,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("accuracy     {:.4}", metrics.accuracy);
        println!("mean margin  {:.4}", metrics.mean_margin);
        println!("loss         {:.4}", metrics.loss);
        println!("count        {} comparisons, {} pairs", encoded.len(), metrics.pairs);
        println!("length       {}", length.describe());
        println!(
            "truncated    {} comparison(s) with prompts cut from the left, {} dropped",
            fit.truncated, fit.dropped
        );
    }
    Ok(())
}

/// `rlhf reward score`: each row of `data` with its reward added — `score` for a single
/// response (`prompt` + `response`/`completion`, or `messages` ending with the assistant),
/// `scores` (best first) for comparison rows — and `"truncated": true` where a prompt was cut
/// to the length the model reads (the trained length unless `--max-len` says otherwise). A
/// row is never dropped for its length: every row gets its score.
pub fn score(args: &ScoreArgs, device: &Device) -> Result<()> {
    let model = RewardModel::load(&args.model, device)?;
    let length = ReadLength::resolve(&args.model, args.length.max_len, model.window())?;
    let encoder = model.encoder_at(length.max_len, Truncation::Left)?;
    let started = Instant::now(); // scoring speed: tokenization and forward passes
    let path = &args.data;
    let rows = read_rows(path)?;
    let mut sequences = Vec::new();
    let mut counts = Vec::with_capacity(rows.len());
    let mut cut = Vec::with_capacity(rows.len());
    let mut truncated = 0;
    for row in &rows {
        let at = row.error_at(path);
        let (prompt, responses) = scored_row(&row.fields).map_err(&at)?;
        let mut fit = FitReport::default();
        for response in &responses {
            let sequence = encoder.encode(&prompt, response, &mut fit).map_err(&at)?;
            sequences.push(sequence.ok_or_else(|| {
                at(format!(
                    "the response alone is longer than {}\nhint: a longer --max-len (0: the whole context window)",
                    length.describe()
                ))
            })?);
        }
        counts.push(responses.len());
        cut.push(fit.truncated > 0);
        truncated += fit.truncated;
    }
    let scores = model.score_sequences(&sequences.iter().collect::<Vec<_>>(), device);
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "reward: scored {} responses in {seconds:.2} s ({:.1} responses/s)",
        scores.len(),
        scores.len() as f64 / seconds
    );
    eprintln!(
        "reward: length {}; {truncated} of {} responses with prompts cut from the left",
        length.describe(),
        scores.len()
    );
    let mut out: Box<dyn Write> = match &args.out {
        Some(file) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(file)
                .map_err(|e| bad_input!("cannot write {}: {e}", file.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut next = scores.into_iter();
    for ((row, count), cut) in rows.into_iter().zip(counts).zip(cut) {
        let mut fields = row.fields;
        let mine: Vec<f32> = next.by_ref().take(count).collect();
        let single = !(fields.contains_key("chosen") || fields.contains_key("responses"));
        match single {
            true => fields.insert("score".into(), json!(mine[0])),
            false => fields.insert("scores".into(), json!(mine)),
        };
        if cut {
            fields.insert("truncated".into(), true.into());
        }
        writeln!(out, "{}", Value::Object(fields))?;
    }
    out.flush()?;
    Ok(())
}

/// A row to score: its prompt and the response(s).
fn scored_row(row: &Map<String, Value>) -> Result<(Vec<Message>, Vec<String>), String> {
    if row.contains_key("chosen") || row.contains_key("responses") {
        let comparison = Comparison::parse(row)?;
        return Ok((comparison.prompt, comparison.responses));
    }
    if let Some(messages) = row.get("messages") {
        let mut messages = parse_messages(messages, "messages")?;
        return match messages.pop() {
            Some(last) if last.role == Role::Assistant && !messages.is_empty() => {
                Ok((messages, vec![last.content]))
            }
            _ => Err("field `messages` must end with the assistant turn to score".into()),
        };
    }
    let response = match (row.get("response"), row.get("completion")) {
        (Some(Value::String(r)), None) | (None, Some(Value::String(r))) => r.clone(),
        (None, None) => {
            return Err(
                "expected `prompt` + `response` (or `completion`), `messages`, or a comparison row"
                    .into(),
            );
        }
        _ => return Err("field `response` (or `completion`) must be one string".into()),
    };
    let prompt = prompt_field(row)?.ok_or("field `prompt` is missing")?;
    Ok((prompt, vec![response]))
}
