//! `rlhf demo`: the task files, the gold judge's rankings and verdicts, and the result table.

use std::path::Path;

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

use crate::checkpoint::{save_atomically, write_file_atomically};
use crate::cli::{DemoCommand, DemoDataArgs, DemoJudgeArgs, DemoRankArgs, DemoSummaryArgs};
use crate::data::jsonl::{Row, read_rows};
use crate::demo::judge::{GoldStats, judge};
use crate::demo::rank::rankings;
use crate::demo::reward_program;
use crate::demo::summary::{ChatTurn, PolicyResult, Summary};
use crate::demo::task::{Split, Task, TaskIndex};
use crate::error::ResultExt;
use crate::metrics::read_jsonl;
use crate::{bad_input, json_file};

pub fn run(command: &DemoCommand) -> Result<()> {
    match command {
        DemoCommand::Data(args) => data(args),
        DemoCommand::Rank(args) => rank(args),
        DemoCommand::Judge(args) if args.reward_program => {
            reward_program::serve(std::io::stdin().lock(), std::io::stdout().lock(), args.metric)
        }
        DemoCommand::Judge(args) => judge_file(args),
        DemoCommand::Summary(args) => summary(args),
    }
}

/// Answers each policy gives to every held-out prompt in the evaluation (`eval.heldout.jsonl`).
const EVAL_SAMPLES: usize = 8;

fn data(args: &DemoDataArgs) -> Result<()> {
    if !(0.0..1.0).contains(&args.held_out) || args.samples == 0 {
        return Err(bad_input!("--held-out must be in [0, 1) and --samples at least 1"));
    }
    if args.out.exists() && !args.force {
        return Err(bad_input!(
            "{} already exists\nhint: pass --force to replace it",
            args.out.display()
        ));
    }
    let split = Split::new(args.seed, args.held_out);
    let demonstrated = args.demonstrations.unwrap_or(split.train.len()).min(split.train.len());
    let prompts = |tasks: &[Task], copies: usize| -> String {
        tasks
            .iter()
            .flat_map(|t| std::iter::repeat_n(t, copies))
            .map(|t| format!("{}\n", json!({ "prompt": t.prompt() })))
            .collect()
    };
    let demonstrations: String = split
        .train
        .iter()
        .take(demonstrated)
        .map(|t| format!("{}\n", json!({ "prompt": t.prompt(), "completion": t.demonstration() })))
        .collect();
    save_atomically(&args.out, |dir| {
        std::fs::write(dir.join("sft.jsonl"), &demonstrations)?;
        std::fs::write(dir.join("prompts.train.jsonl"), prompts(&split.train, 1))?;
        std::fs::write(dir.join("prompts.heldout.jsonl"), prompts(&split.held_out, 1))?;
        std::fs::write(dir.join("rank.train.jsonl"), prompts(&split.train, args.samples))?;
        std::fs::write(dir.join("rank.heldout.jsonl"), prompts(&split.held_out, args.samples))?;
        std::fs::write(dir.join("eval.heldout.jsonl"), prompts(&split.held_out, EVAL_SAMPLES))?;
        Ok(())
    })?;
    eprintln!(
        "demo data: {} train prompts ({} with a demonstration), {} held-out prompts, {} answers a prompt to rank, in {}",
        split.train.len(),
        demonstrated,
        split.held_out.len(),
        args.samples,
        args.out.display()
    );
    Ok(())
}

fn rank(args: &DemoRankArgs) -> Result<()> {
    let index = TaskIndex::new();
    let answers = answers(&args.samples, &index)?;
    let ranked = rankings(answers.iter().map(|(task, response)| (*task, response.as_str())));
    if ranked.is_empty() {
        return Err(bad_input!(
            "{}: no prompt has two answers the judge tells apart, so there is nothing to rank",
            args.samples.display()
        ));
    }
    let text: String = ranked
        .iter()
        .map(|r| format!("{}\n", json!({ "prompt": r.prompt, "responses": r.responses })))
        .collect();
    write_file_atomically(&args.out, &text)?;
    let pairs: usize = ranked.iter().map(|r| r.responses.len() * (r.responses.len() - 1) / 2).sum();
    eprintln!(
        "demo rank: {} rankings ({pairs} pairs) from {} answers to {}",
        ranked.len(),
        answers.len(),
        args.out.display()
    );
    Ok(())
}

fn judge_file(args: &DemoJudgeArgs) -> Result<()> {
    // clap requires --data without --reward-program; a caller in code may forget it
    let data = args.data.as_deref().ok_or_else(|| bad_input!("pass --data or --reward-program"))?;
    let stats = gold_stats(data, &TaskIndex::new())?;
    if args.json {
        println!(
            "{}",
            json!({ "answers": stats.answers, "score": stats.score, "correct": stats.correct, "form": stats.form })
        );
    } else {
        println!("answers  {}", stats.answers);
        println!("score    {:.4}", stats.score);
        println!("correct  {:.1} %", 100.0 * stats.correct);
        println!("form     {:.4}", stats.form);
    }
    Ok(())
}

fn summary(args: &DemoSummaryArgs) -> Result<()> {
    let eval = args.dir.join("eval");
    let index = TaskIndex::new();
    let mut summary = Summary::default();
    for (name, label) in [("base", "base"), ("sft", "SFT"), ("ppo", "PPO"), ("dpo", "DPO")] {
        let report = eval.join(format!("{name}.json"));
        if !report.exists() {
            continue;
        }
        let report: Value = json_file::read(&report).bad_input()?;
        let number = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
        if name == "base" {
            summary.model = report["policy"].as_str().unwrap_or("").to_string();
        }
        summary.policies.push(PolicyResult {
            label: label.to_string(),
            gold: gold_stats(&eval.join(format!("{name}.jsonl")), &index)?,
            reward: number("reward_mean"),
            kl: number("kl_mean"),
            length: number("response_length"),
        });
    }
    if summary.policies.is_empty() {
        return Err(bad_input!(
            "{}: no base.json, sft.json or ppo.json (`rlhf ppo eval --json` reports)",
            eval.display()
        ));
    }
    let reward = eval.join("reward.json");
    if reward.exists() {
        let report: Value = json_file::read(&reward).bad_input()?;
        if let (Some(accuracy), Some(pairs)) =
            (report["accuracy"].as_f64(), report["pairs"].as_u64())
        {
            summary.reward_accuracy = Some((accuracy, pairs as usize));
        }
    }
    summary.moderation_auprc =
        read_jsonl(&args.dir.join("moderate").join("metrics.jsonl")).iter().rev().find_map(|r| {
            let macro_auprc = r["valid_macro_auprc"].as_f64()?;
            Some((r["valid_auprc_any"].as_f64(), macro_auprc))
        });
    summary.stages = stage_times(&args.dir.join("times.tsv"))?;
    summary.chat = chat_turns(&args.dir)?;
    let text = summary.markdown();
    write_file_atomically(&args.dir.join("summary.md"), &text)?;
    print!("{text}");
    Ok(())
}

/// The judge's verdicts on a file of answers.
fn gold_stats(path: &Path, index: &TaskIndex) -> Result<GoldStats> {
    let verdicts: Vec<_> =
        answers(path, index)?.iter().map(|(task, response)| judge(task, response)).collect();
    Ok(GoldStats::of(&verdicts))
}

/// (task, answer) of every row: "prompt" must be a demo prompt, the answer is "completion"
/// (`rlhf generate`) or "response" (`rlhf ppo eval --out`).
fn answers<'a>(path: &Path, index: &'a TaskIndex) -> Result<Vec<(&'a Task, String)>> {
    read_rows(path)?
        .iter()
        .map(|Row { line, fields }| {
            let at = |message: &str| bad_input!("{}:{line}: {message}", path.display());
            let prompt = fields
                .get("prompt")
                .and_then(Value::as_str)
                .ok_or_else(|| at("field `prompt` is missing or not a string"))?;
            let task = index.get(prompt).ok_or_else(|| {
                at("field `prompt` is not one of the demo's prompts (see `rlhf demo data`)")
            })?;
            let answer = ["completion", "response"]
                .iter()
                .find_map(|key| fields.get(*key).and_then(Value::as_str))
                .ok_or_else(|| at("field `completion` or `response` is missing or not a string"))?;
            Ok((task, answer.to_string()))
        })
        .collect()
}

/// `chat.in` (a message a line) beside `chat.jsonl` (`rlhf chat --json`: an answer a line).
fn chat_turns(dir: &Path) -> Result<Vec<ChatTurn>> {
    let (messages, answers) = (dir.join("chat.in"), dir.join("chat.jsonl"));
    if !messages.exists() || !answers.exists() {
        return Ok(Vec::new());
    }
    let messages = std::fs::read_to_string(&messages)?;
    let messages = messages.lines().filter(|l| !l.trim().is_empty());
    messages
        .zip(read_rows(&answers)?)
        .map(|(message, Row { fields, .. })| {
            let answer = fields.get("content").and_then(Value::as_str).unwrap_or_default();
            let declined =
                fields.get("finish_reason").and_then(Value::as_str) == Some("content_filter");
            Ok(ChatTurn { message: message.to_string(), answer: answer.to_string(), declined })
        })
        .collect()
}

/// `stage<TAB>seconds` lines; no file, no times.
fn stage_times(path: &Path) -> Result<Vec<(String, f64)>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let (stage, seconds) = line.split_once('\t').unwrap_or((line, ""));
            let seconds = seconds.trim().parse::<f64>().map_err(|_| {
                anyhow!("{}:{}: expected `stage<TAB>seconds`", path.display(), i + 1)
            })?;
            Ok((stage.to_string(), seconds))
        })
        .collect()
}
