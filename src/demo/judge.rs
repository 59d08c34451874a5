//! The gold judge: a program that scores an answer the way the demo's labellers would, so the
//! reward model's comparisons have a ground truth and PPO's gain can be measured by something
//! the reward model is not.
//!
//! Half the score is correctness (an accepted answer appears as a whole word), half is the
//! form the prompt asked for; near misses of the form get partial credit so that rankings of
//! several answers have few ties.

use super::task::{Format, Task};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub correct: bool,
    /// How well the answer has the asked-for form, 0 to 1.
    pub form: f64,
    /// (correct + form) / 2.
    pub score: f64,
}

pub fn judge(task: &Task, response: &str) -> Verdict {
    let said = words(response);
    let correct = task.fact.answers.iter().any(|answer| contains_phrase(&said, &words(answer)));
    let form = match task.format {
        Format::OneWord => one_word(&said),
        Format::Sentence => sentence(response.trim(), said.len()),
        Format::Number => number(response.trim(), &said),
    };
    Verdict { correct, form, score: (f64::from(u8::from(correct)) + form) / 2.0 }
}

/// Means over a set of judged answers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GoldStats {
    pub answers: usize,
    pub score: f64,
    /// Fraction of answers that are correct.
    pub correct: f64,
    /// Mean form score.
    pub form: f64,
}

impl GoldStats {
    pub fn of(verdicts: &[Verdict]) -> Self {
        let n = verdicts.len().max(1) as f64;
        let mean = |f: fn(&Verdict) -> f64| verdicts.iter().map(f).sum::<f64>() / n;
        Self {
            answers: verdicts.len(),
            score: mean(|v| v.score),
            correct: mean(|v| f64::from(u8::from(v.correct))),
            form: mean(|v| v.form),
        }
    }
}

/// Exactly one word; each extra word costs a quarter.
fn one_word(words: &[String]) -> f64 {
    match words.len() {
        0 => 0.0,
        n => (1.0 - 0.25 * (n - 1) as f64).max(0.0),
    }
}

/// One sentence of 4 to 15 words, capitalised, ending with a full stop. Half credit for a
/// single sentence that is too long or lacks its full stop.
fn sentence(text: &str, words: usize) -> f64 {
    let stops = text.chars().filter(|c| matches!(c, '.' | '!' | '?')).count();
    let capitalised = text.chars().next().is_some_and(char::is_uppercase);
    let ends = text.ends_with('.');
    match (words, stops) {
        (4..=15, 1) if capitalised && ends => 1.0,
        (4..=30, 0) | (16..=30, 1) => 0.5,
        _ => 0.0,
    }
}

/// Digits alone (a full stop allowed); half credit for a short answer with the digits in it.
fn number(text: &str, words: &[String]) -> f64 {
    let bare = text.trim_end_matches('.');
    if !bare.is_empty() && bare.chars().all(|c| c.is_ascii_digit()) {
        1.0
    } else if words.len() <= 3 && text.chars().any(|c| c.is_ascii_digit()) {
        0.5
    } else {
        0.0
    }
}

/// Lower-cased words with the punctuation around them removed ("twenty-four" stays whole).
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

fn contains_phrase(words: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && words.windows(phrase.len()).any(|w| w == phrase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::task::TaskIndex;

    fn score(prompt: &str, response: &str) -> (bool, f64) {
        let index = TaskIndex::new();
        let v = judge(index.get(prompt).expect("a demo prompt"), response);
        (v.correct, v.form)
    }

    #[test]
    fn one_word_answers() {
        let p = "What is the capital of France? Answer in one word.";
        assert_eq!(score(p, "Paris."), (true, 1.0));
        assert_eq!(score(p, "The capital of France is Paris."), (true, 0.0));
        assert_eq!(score(p, "Paris, France"), (true, 0.75));
        assert_eq!(score(p, "Lyon"), (false, 1.0));
        assert_eq!(score(p, "Parisian"), (false, 1.0), "whole words only");
    }

    #[test]
    fn sentence_answers() {
        let p = "What color is grass? Answer in one complete sentence.";
        assert_eq!(score(p, "Grass is usually green."), (true, 1.0));
        assert_eq!(score(p, "Green."), (true, 0.0));
        assert_eq!(score(p, "Grass is green. It grows."), (true, 0.0));
        assert_eq!(score(p, "grass is green."), (true, 0.0), "capitalised");
        assert_eq!(score(p, "Grass is green because of chlorophyll"), (true, 0.5));
    }

    #[test]
    fn number_answers() {
        let p = "How many legs does a spider have? Answer with just the number.";
        assert_eq!(score(p, "8"), (true, 1.0));
        assert_eq!(score(p, "8 legs"), (true, 0.5));
        assert_eq!(score(p, "Eight."), (true, 0.0));
        assert_eq!(score(p, "18"), (false, 1.0));
        assert_eq!(score(p, "A spider has 8 legs."), (true, 0.0));
    }
}
