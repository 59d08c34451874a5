//! `rlhf moderate eval` and `rlhf moderate score`: the moderation classifier measured on
//! labelled data, and its OpenAI-shaped verdicts.

use std::io::{BufRead, Write};
use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;

use crate::bad_input;
use crate::cli::{EvalArgs, ModerateScoreArgs};
use crate::data::jsonl::read_rows;
use crate::data::moderation::{CATEGORIES, read_labeled, row_text};
use crate::moderation::Moderator;
use crate::moderation::metrics::evaluate;

/// `rlhf moderate eval`: per-category AUPRC, and precision, recall and F1 at the saved
/// thresholds, over the known labels of a labelled file.
pub fn eval(args: &EvalArgs, device: &Device) -> Result<()> {
    let moderator = Moderator::load(&args.model, device)?;
    let rows = read_labeled(&args.data)?;
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let verdicts = moderator.moderate(&texts)?;
    let report = evaluate(&rows, &verdicts);
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{:<18} {:>7} {:>9} {:>7} {:>9} {:>7} {:>7} {:>6} {:>9}",
        "category", "AUPRC", "precision", "recall", "F1", "ECE", "known", "pos", "threshold"
    );
    for ((_, name), row) in
        CATEGORIES.iter().zip(report["categories"].as_array().expect("built above"))
    {
        let f = |key: &str| row[key].as_f64().map_or("-".to_string(), |v| format!("{v:.3}"));
        println!(
            "{name:<18} {:>7} {:>9} {:>7} {:>9} {:>7} {:>7} {:>6} {:>9}",
            f("auprc"),
            f("precision"),
            f("recall"),
            f("f1"),
            f("ece"),
            row["known"],
            row["positives"],
            moderator.settings.thresholds[*name]
                .as_f64()
                .map_or("never".into(), |t| format!("{t:.3}"))
        );
    }
    let any = &report["any"];
    println!(
        "any category: AUPRC {}  ({} texts, {} positive); ECE over every label {}",
        any["auprc"].as_f64().map_or("-".into(), |v| format!("{v:.3}")),
        any["known"],
        any["positives"],
        report["ece"].as_f64().map_or("-".into(), |v| format!("{v:.3}"))
    );
    Ok(())
}

/// `rlhf moderate score`: one OpenAI-shaped verdict per text — the TEXT arguments, the rows of
/// `--data` (`text` or `prompt`), or else the lines of stdin.
pub fn score(args: &ModerateScoreArgs, device: &Device) -> Result<()> {
    let moderator = Moderator::load(&args.model, device)?;
    let texts: Vec<String> = match (&args.data, args.text.is_empty()) {
        (Some(_), false) => return Err(bad_input!("give texts as arguments or --data, not both")),
        (Some(path), true) => read_rows(path)?
            .iter()
            .map(|row| row_text(&row.fields).map_err(row.error_at(path)))
            .collect::<Result<_>>()?,
        (None, false) => args.text.clone(),
        (None, true) => std::io::stdin().lock().lines().collect::<std::io::Result<_>>()?,
    };
    let started = Instant::now();
    let verdicts = moderator.moderate(&texts.iter().map(String::as_str).collect::<Vec<_>>())?;
    let seconds = started.elapsed().as_secs_f64();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for verdict in &verdicts {
        writeln!(out, "{}", verdict.to_json())?;
    }
    out.flush()?;
    eprintln!(
        "moderate: {} texts in {seconds:.2} s ({:.1} texts/s)",
        texts.len(),
        texts.len() as f64 / seconds
    );
    Ok(())
}
