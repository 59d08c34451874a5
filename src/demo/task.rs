//! The demo's task: short questions about common facts, each with an instruction on the form
//! of the answer ("Answer in one word.", "Answer in one complete sentence.", "Answer with just
//! the number."). A pretrained chat model mostly knows the facts and mostly ignores the form,
//! which is what the stages after it have to teach.

use std::collections::HashMap;

use super::facts::{FACTS, Fact};
use crate::train::shuffle::permutation;

/// The form an answer must take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    OneWord,
    Sentence,
    Number,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::OneWord, Format::Sentence, Format::Number];

    pub fn instruction(self) -> &'static str {
        match self {
            Format::OneWord => "Answer in one word.",
            Format::Sentence => "Answer in one complete sentence.",
            Format::Number => "Answer with just the number.",
        }
    }

    fn applies_to(self, fact: &Fact) -> bool {
        self != Format::Number || fact.numeric
    }
}

/// One prompt: a fact asked about in a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    pub fact: &'static Fact,
    pub format: Format,
}

impl Task {
    pub fn prompt(&self) -> String {
        format!("{} {}", self.fact.question, self.format.instruction())
    }

    /// The answer a careful labeller writes.
    pub fn demonstration(&self) -> String {
        match self.format {
            Format::OneWord => capitalised(self.fact.answers[0]),
            Format::Sentence => self.fact.sentence.to_string(),
            Format::Number => self.fact.answers[0].to_string(),
        }
    }
}

/// Every task, facts in table order.
pub fn all_tasks() -> Vec<Task> {
    FACTS
        .iter()
        .flat_map(|fact| {
            Format::ALL
                .into_iter()
                .filter(|f| f.applies_to(fact))
                .map(move |format| Task { fact, format })
        })
        .collect()
}

/// The tasks split by fact, so that no held-out question was seen in training in any form.
pub struct Split {
    pub train: Vec<Task>,
    pub held_out: Vec<Task>,
}

impl Split {
    /// `held_out_fraction` of the facts (at least one) go to the held-out side, chosen by
    /// `seed`; each side is in a seeded random order.
    pub fn new(seed: u64, held_out_fraction: f64) -> Self {
        let order = permutation(FACTS.len(), seed, 0);
        let held =
            ((FACTS.len() as f64 * held_out_fraction).round() as usize).clamp(1, FACTS.len() - 1);
        let held_questions: Vec<&str> = order[..held].iter().map(|&i| FACTS[i].question).collect();
        let (held_out, train): (Vec<Task>, Vec<Task>) =
            all_tasks().into_iter().partition(|t| held_questions.contains(&t.fact.question));
        Self { train: shuffled(train, seed, 1), held_out: shuffled(held_out, seed, 2) }
    }
}

fn shuffled(tasks: Vec<Task>, seed: u64, stream: u64) -> Vec<Task> {
    permutation(tasks.len(), seed, stream).into_iter().map(|i| tasks[i]).collect()
}

/// Finds the task behind a prompt the generator wrote.
pub struct TaskIndex(HashMap<String, Task>);

impl TaskIndex {
    pub fn new() -> Self {
        Self(all_tasks().into_iter().map(|t| (t.prompt(), t)).collect())
    }

    pub fn get(&self, prompt: &str) -> Option<&Task> {
        self.0.get(prompt.trim())
    }
}

impl Default for TaskIndex {
    fn default() -> Self {
        Self::new()
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_unique_and_the_split_keeps_facts_apart() {
        let tasks = all_tasks();
        assert_eq!(TaskIndex::new().0.len(), tasks.len(), "two tasks share a prompt");
        let split = Split::new(0, 0.2);
        assert_eq!(split.train.len() + split.held_out.len(), tasks.len());
        for t in &split.held_out {
            assert!(!split.train.iter().any(|u| u.fact == t.fact));
        }
        let again = Split::new(0, 0.2);
        assert_eq!(split.train, again.train, "the split is fixed by the seed");
        assert_ne!(split.train, Split::new(1, 0.2).train);
    }

    #[test]
    fn demonstrations_have_the_form_asked_for() {
        let index = TaskIndex::new();
        let task =
            index.get("How many legs does a spider have? Answer with just the number.").unwrap();
        assert_eq!(task.demonstration(), "8");
        let task = index.get("What color is grass? Answer in one word.").unwrap();
        assert_eq!(task.demonstration(), "Green");
    }
}
