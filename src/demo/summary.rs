//! The demo's result table: each policy on the held-out prompts by the gold judge and by the
//! reward model, with its KL to the SFT model, then the reward model's and the moderation
//! classifier's held-out quality and each stage's time.

use std::fmt::Write;

use super::judge::GoldStats;

/// One policy sampled on the held-out prompts.
#[derive(Debug, Clone)]
pub struct PolicyResult {
    pub label: String,
    pub gold: GoldStats,
    /// The reward model's mean (normalised) score.
    pub reward: f64,
    /// KL to the SFT model, nats per response.
    pub kl: f64,
    /// Response length in tokens.
    pub length: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub model: String,
    pub policies: Vec<PolicyResult>,
    /// Pairwise accuracy on held-out comparisons, and how many pairs.
    pub reward_accuracy: Option<(f64, usize)>,
    /// Validation AUPRC: any category, and the macro mean over categories.
    pub moderation_auprc: Option<(Option<f64>, f64)>,
    /// (stage, seconds)
    pub stages: Vec<(String, f64)>,
    /// The scripted chat: each message with its answer, declined or not.
    pub chat: Vec<ChatTurn>,
}

#[derive(Debug, Clone)]
pub struct ChatTurn {
    pub message: String,
    pub answer: String,
    /// The moderation classifier flagged the message or the answer.
    pub declined: bool,
}

impl Summary {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let answers = self.policies.first().map_or(0, |p| p.gold.answers);
        let _ = writeln!(out, "# rlhf demo: {}\n", self.model);
        let _ = writeln!(
            out,
            "Each policy gives {answers} sampled answers to the held-out prompts (several a \
             prompt); the gold judge scores correctness and the asked-for form (0–1), the reward \
             model scores what it learned from the judge's rankings.\n"
        );
        out.push_str(
            "| policy | gold score | correct | form | reward model | KL to SFT (nats) | length (tokens) |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|\n");
        for p in &self.policies {
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.0} % | {:.3} | {:+.3} | {:.2} | {:.1} |",
                p.label,
                p.gold.score,
                100.0 * p.gold.correct,
                p.gold.form,
                p.reward,
                p.kl,
                p.length
            );
        }
        let verdicts: Vec<String> = ["PPO", "DPO"].iter().filter_map(|m| self.verdict(m)).collect();
        if !verdicts.is_empty() {
            let _ = writeln!(out, "\n{}", verdicts.join("\n\n"));
        }
        out.push('\n');
        if let Some((accuracy, pairs)) = self.reward_accuracy {
            let _ = writeln!(
                out,
                "- Reward model: {accuracy:.3} pairwise accuracy on {pairs} held-out pairs."
            );
        }
        if let Some((any, macro_auprc)) = self.moderation_auprc {
            let any = any.map_or_else(|| "n/a".to_string(), |a| format!("{a:.3}"));
            let _ = writeln!(
                out,
                "- Moderation: validation AUPRC {any} (any category), {macro_auprc:.3} (macro)."
            );
        }
        if !self.stages.is_empty() {
            let total: f64 = self.stages.iter().map(|(_, s)| s).sum();
            out.push_str("\n| stage | time |\n|---|---|\n");
            for (stage, seconds) in &self.stages {
                let _ = writeln!(out, "| {stage} | {} |", duration(*seconds));
            }
            let _ = writeln!(out, "| total | {} |", duration(total));
        }
        if !self.chat.is_empty() {
            out.push_str("\nChat with the PPO model behind the moderation classifier:\n\n```\n");
            for turn in &self.chat {
                let _ = writeln!(out, "you> {}", turn.message);
                let mark = if turn.declined { "  [declined by moderation]" } else { "" };
                let _ = writeln!(out, "assistant> {}{mark}", turn.answer.replace('\n', " ⏎ "));
            }
            out.push_str("```\n");
        }
        out
    }

    /// `method` (PPO, DPO) against SFT, on both judges. PPO optimises the reward model, so a
    /// gain there with a loss on the gold judge is over-optimisation, and is said so.
    fn verdict(&self, method: &str) -> Option<String> {
        let find = |label: &str| self.policies.iter().find(|p| p.label.starts_with(label));
        let (sft, tuned) = (find("SFT")?, find(method)?);
        let (gold, reward) = (tuned.gold.score - sft.gold.score, tuned.reward - sft.reward);
        Some(if gold > 0.0 {
            format!(
                "**{method} beats SFT on the gold judge: {gold:+.3}** (reward model {reward:+.3}, \
                 at a KL of {:.2} nats to SFT).",
                tuned.kl
            )
        } else if reward > 0.0 && method == "PPO" {
            format!(
                "**The reward model is over-optimised:** PPO raised its score by {reward:+.3} \
                 while the gold judge's fell by {:.3}.",
                -gold
            )
        } else {
            format!(
                "{method} did not improve on SFT: gold judge {gold:+.3}, reward model {reward:+.3} \
                 (KL {:.2} nats).",
                tuned.kl
            )
        })
    }
}

fn duration(seconds: f64) -> String {
    if seconds >= 60.0 {
        format!("{}m {:02}s", (seconds / 60.0) as u64, seconds as u64 % 60)
    } else {
        format!("{seconds:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(label: &str, gold: f64, reward: f64) -> PolicyResult {
        let gold = GoldStats { answers: 40, score: gold, correct: 0.9, form: 0.5 };
        PolicyResult { label: label.into(), gold, reward, kl: 1.5, length: 6.0 }
    }

    #[test]
    fn the_table_says_whether_ppo_and_dpo_beat_sft_or_overoptimised() {
        let mut summary = Summary {
            model: "m".into(),
            policies: vec![
                policy("base", 0.4, -1.0),
                policy("SFT", 0.6, 0.0),
                policy("PPO", 0.7, 1.0),
                policy("DPO", 0.55, 0.2),
            ],
            reward_accuracy: Some((0.8, 120)),
            moderation_auprc: Some((Some(0.81), 0.5)),
            stages: vec![("sft".into(), 61.0), ("ppo".into(), 5.5)],
            chat: vec![ChatTurn { message: "hi".into(), answer: "no\n".into(), declined: true }],
        };
        let text = summary.markdown();
        assert!(text.contains("| PPO | 0.700 | 90 % | 0.500 | +1.000 | 1.50 | 6.0 |"), "{text}");
        assert!(text.contains("PPO beats SFT on the gold judge: +0.100"), "{text}");
        // DPO never saw the reward model, so a gain there is not over-optimisation.
        assert!(text.contains("DPO did not improve on SFT: gold judge -0.050"), "{text}");
        assert!(text.contains("0.800 pairwise accuracy on 120 held-out pairs"), "{text}");
        assert!(text.contains("| total | 1m 06s |"), "{text}");
        assert!(text.contains("you> hi\nassistant> no ⏎   [declined by moderation]\n"), "{text}");
        summary.policies[2].gold.score = 0.5;
        assert!(summary.markdown().contains("over-optimised"));
    }
}
