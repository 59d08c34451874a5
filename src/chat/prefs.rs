//! `/compare K`: the user's ranking of K sampled answers, appended to `--prefs` as
//! `{"prompt": [messages…], "responses": [best, …, worst]}`, InstructGPT's comparison data in
//! the form `rlhf reward train` reads.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::log::{append as append_row, open_for_append};
use crate::data::chat::Message;

/// `"2 1 3"` → candidate indices best first (0-based); every candidate ranked exactly once.
pub fn parse_ranking(text: &str, k: usize) -> Result<Vec<usize>, String> {
    let usage = || format!("rank all {k} answers best first, e.g. `{}` (or /skip)", example(k));
    let ranking: Vec<usize> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '>')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().ok().filter(|n| (1..=k).contains(n)).map(|n| n - 1))
        .collect::<Option<_>>()
        .ok_or_else(usage)?;
    let mut seen = vec![false; k];
    for &i in &ranking {
        if std::mem::replace(&mut seen[i], true) {
            return Err(usage());
        }
    }
    match ranking.len() == k {
        true => Ok(ranking),
        false => Err(usage()),
    }
}

fn example(k: usize) -> String {
    let mut order: Vec<String> = (1..=k).map(|i| i.to_string()).collect();
    order.swap(0, k.min(2) - 1);
    order.join(" ")
}

/// Appends one comparison row.
pub fn append(path: &Path, prompt: &[Message], best_first: &[String]) -> Result<()> {
    let row = json!({ "prompt": prompt, "responses": best_first });
    append_row(&mut open_for_append(path)?, &row).with_context(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rankings_name_every_answer_once() {
        assert_eq!(parse_ranking("2 1 3", 3).unwrap(), [1, 0, 2]);
        assert_eq!(parse_ranking("3,1,2", 3).unwrap(), [2, 0, 1]);
        assert_eq!(parse_ranking("2 > 1", 2).unwrap(), [1, 0]);
        for bad in ["2 1", "1 1 2", "0 1 2", "4 1 2", "a b c", ""] {
            assert!(parse_ranking(bad, 3).unwrap_err().contains("e.g. `2 1 3`"), "{bad}");
        }
    }
}
