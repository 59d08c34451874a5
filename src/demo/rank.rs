//! The labellers' step of InstructGPT (Ouyang et al., 2022, §3.4): several sampled answers to
//! one prompt, ranked best first — here by the gold judge instead of people.

use super::judge::judge;
use super::task::Task;

/// A prompt's distinct answers, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub prompt: String,
    pub responses: Vec<String>,
}

/// Ranks the answers of each task (in the order the tasks first appear). Answers the judge
/// scores equally are ties a ranking cannot state, so only the first of each score is kept; a
/// prompt left with fewer than two answers gives no ranking.
pub fn rankings<'a>(samples: impl IntoIterator<Item = (&'a Task, &'a str)>) -> Vec<Ranking> {
    let mut groups: Vec<(&Task, Vec<(f64, &str)>)> = Vec::new();
    for (task, response) in samples {
        let score = judge(task, response).score;
        let group = match groups.iter().position(|(t, _)| *t == task) {
            Some(i) => &mut groups[i].1,
            None => {
                groups.push((task, Vec::new()));
                &mut groups.last_mut().expect("just pushed").1
            }
        };
        if !group.iter().any(|(s, _)| *s == score) {
            group.push((score, response));
        }
    }
    groups
        .into_iter()
        .filter(|(_, answers)| answers.len() >= 2)
        .map(|(task, mut answers)| {
            answers.sort_by(|a, b| b.0.total_cmp(&a.0)); // stable: ties cannot remain
            Ranking {
                prompt: task.prompt(),
                responses: answers.into_iter().map(|(_, r)| r.to_string()).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::task::TaskIndex;

    #[test]
    fn best_first_one_answer_per_score_and_no_ranking_of_one() {
        let index = TaskIndex::new();
        let p = index.get("What is the capital of France? Answer in one word.").unwrap();
        let q = index.get("What color is snow? Answer in one word.").unwrap();
        let samples = [
            (p, "The capital of France is Paris."),
            (q, "White"),
            (p, "Paris"),
            (p, "Paris!"),
            (q, "White."),
            (p, "Lyon"),
            (p, "Lyon, France"),
        ];
        let ranked = rankings(samples.iter().map(|(t, r)| (*t, *r)));
        assert_eq!(ranked.len(), 1, "snow's two answers tie");
        assert_eq!(ranked[0].prompt, p.prompt());
        // 1.0, 0.5 (right, wrong form), 0.375; "Lyon" ties at 0.5 (wrong, right form) and goes.
        assert_eq!(
            ranked[0].responses,
            ["Paris", "The capital of France is Paris.", "Lyon, France"]
        );
    }
}
