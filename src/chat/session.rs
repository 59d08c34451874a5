//! A chat session: the conversation, its KV cache, and what happens on each turn — input
//! screened, context fitted to the window, the answer streamed (screened as it goes), scored by
//! the reward model, logged. The REPL and the piped mode are two front ends over this.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Error, Result, anyhow};
use burn::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::command::Settings;
use super::context::{self, Fit, Measure};
use super::feedback;
use super::interrupt;
use super::log::ChatLog;
use super::prefs;
use crate::bad_input;
use crate::data::chat::{Message, Role};
use crate::data::moderation::CATEGORIES;
use crate::data::template::ChatTemplate;
use crate::generate::{Conversation, Finish, Generator, SamplingConfig, TextStream};
use crate::model::reward::RewardModel;
use crate::moderation::screen::{Screen, Verdict};
use crate::moderation::{Moderation, Moderator};

/// Where a turn's text and notices go.
pub trait Output {
    /// A piece of the answer, as it streams.
    fn text(&mut self, piece: &str);
    /// Something the user should know (turns left out, a message cut, an answer withheld).
    fn notice(&mut self, text: &str);
}

/// Why an answer ended, in OpenAI's words where it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    /// Ctrl-C: the partial answer stays in the conversation.
    Interrupted,
    /// The moderation classifier flagged the message or the answer.
    ContentFilter,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Tokens of the prompt the model read.
    pub prompt_tokens: usize,
    /// Of those, how many came from the KV cache (the rest were prefilled).
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

/// One answer and how it came about.
#[derive(Debug, Clone)]
pub struct Answer {
    pub content: String,
    pub finish: FinishReason,
    pub usage: Usage,
    /// The verdict on the answer (or on the message, when that was declined).
    pub moderation: Option<Moderation>,
    pub reward: Option<f32>,
    pub seed: u64,
    pub first_token: Option<Duration>,
    pub elapsed: Duration,
}

impl Answer {
    /// Decoding speed after the first token.
    pub fn tokens_per_second(&self) -> f64 {
        let decode = self.elapsed.saturating_sub(self.first_token.unwrap_or_default());
        match self.usage.completion_tokens {
            n if n > 1 && !decode.is_zero() => (n - 1) as f64 / decode.as_secs_f64(),
            _ => 0.0,
        }
    }

    /// `{"role": "assistant", "content", "finish_reason", "usage", "moderation"?, "reward"?,
    /// "timing"?}`
    pub fn to_json(&self) -> Value {
        let mut json = json!({
            "role": "assistant",
            "content": self.content,
            "finish_reason": self.finish,
            "usage": self.usage,
        });
        if let Some(verdict) = &self.moderation {
            json["moderation"] = verdict.to_json();
        }
        if let Some(reward) = self.reward {
            json["reward"] = (reward as f64).into();
        }
        if let Some(first) = self.first_token {
            // Tenths: the clock says no more than that about one answer.
            let tenths = |x: f64| (x * 10.0).round() / 10.0;
            json["timing"] = json!({
                "first_token_ms": tenths(first.as_secs_f64() * 1e3),
                "tokens_per_second": tenths(self.tokens_per_second()),
            });
        }
        json
    }
}

/// The services around the policy, each optional.
#[derive(Default)]
pub struct Services {
    pub moderator: Option<Moderator>,
    pub reward: Option<RewardModel>,
    pub log: Option<ChatLog>,
    /// `--prefs`: where `/compare` appends rankings (and `/good`, `/bad` their KTO rows, to
    /// the file beside it).
    pub prefs: Option<PathBuf>,
}

pub struct Session<'a> {
    generator: Generator<'a>,
    tokenizer: &'a Tokenizer,
    template: ChatTemplate,
    /// Strings that end an answer besides the end-of-turn token (the HH template's next turn).
    stops: Vec<String>,
    window: usize,
    pub settings: Settings,
    system: Option<String>,
    /// User and assistant messages, oldest first: the whole history, also what the window
    /// leaves out.
    turns: Vec<Message>,
    conversation: Conversation,
    services: Services,
    device: Device,
    last: Option<Answer>,
    /// Turns left out the last time the user was told, so each drop is told once.
    dropped_told: usize,
    /// Answers drawn by /retry, /best and /compare: each draw gets its own seed.
    draws: u64,
}

impl<'a> Session<'a> {
    pub fn new(
        generator: Generator<'a>,
        tokenizer: &'a Tokenizer,
        template: ChatTemplate,
        window: usize,
        sampling: SamplingConfig,
        services: Services,
        device: &Device,
    ) -> Self {
        let mut stops = sampling.stop.clone();
        if matches!(template, ChatTemplate::Hh) {
            stops.push("\n\nHuman:".into());
        }
        let conversation = generator.conversation();
        Self {
            generator,
            tokenizer,
            template,
            stops,
            window,
            settings: Settings { sampling, show_scores: false },
            system: None,
            turns: Vec::new(),
            conversation,
            services,
            device: device.clone(),
            last: None,
            dropped_told: 0,
            draws: 0,
        }
    }

    /// The conversation: the system message (if any), then the turns.
    pub fn history(&self) -> Vec<Message> {
        let system = self.system.iter().map(|s| Message::new(Role::System, s.clone()));
        system.chain(self.turns.iter().cloned()).collect()
    }

    pub fn set_system(&mut self, text: Option<String>) {
        self.system = text.filter(|t| !t.is_empty());
    }

    /// Starts over; the system message stays. The cache keeps what still matches.
    pub fn reset(&mut self) {
        self.turns.clear();
        self.dropped_told = 0;
        self.new_log_conversation();
    }

    /// Replaces the conversation with a saved one.
    pub fn load(&mut self, messages: Vec<Message>) {
        let mut messages = messages.into_iter().peekable();
        if let Some(system) = messages.next_if(|m| m.role == Role::System) {
            self.system = Some(system.content);
        }
        self.turns = messages.collect();
        self.dropped_told = 0;
        self.new_log_conversation();
    }

    fn new_log_conversation(&mut self) {
        if let Some(log) = &mut self.services.log {
            log.new_conversation();
        }
    }

    /// Removes the last exchange (the last user message and the answers after it); how many
    /// messages went.
    pub fn undo(&mut self) -> usize {
        let start = self.turns.iter().rposition(|m| m.role == Role::User).unwrap_or(0);
        let removed = self.turns.len() - start;
        self.turns.truncate(start);
        removed
    }

    /// A user message: screened, then answered.
    pub fn send(&mut self, text: &str, out: &mut dyn Output) -> Result<Answer> {
        if let Some(verdict) = self.screen_input(text, out)? {
            let answer = Answer {
                content: verdict.refusal(),
                finish: FinishReason::ContentFilter,
                usage: Usage::default(),
                moderation: Some(verdict),
                reward: None,
                seed: self.settings.sampling.seed,
                first_token: None,
                elapsed: Duration::ZERO,
            };
            out.text(&answer.content);
            return Ok(answer);
        }
        self.turns.push(Message::new(Role::User, text));
        let sampling = self.settings.sampling.clone();
        let answer = self.answer(&sampling, true, out);
        if answer.is_err() && self.turns.last().is_some_and(|m| m.role == Role::User) {
            self.turns.pop(); // unanswered: the user sends it again after fixing what failed
        }
        answer
    }

    /// A new answer to the last user message, with a seed of its own.
    pub fn retry(&mut self, out: &mut dyn Output) -> Result<Answer> {
        self.drop_last_answer()?;
        let sampling = self.draw();
        self.answer(&sampling, true, out)
    }

    /// Best-of-N: samples `n` answers to the last user message and keeps the one the reward
    /// model scores highest. All of them come back, best first.
    pub fn best_of(&mut self, n: usize, out: &mut dyn Output) -> Result<Vec<Answer>> {
        if self.services.reward.is_none() {
            return Err(anyhow!("/best needs a reward model: start with --reward DIR"));
        }
        let mut answers = self.candidates(n, out)?;
        answers
            .sort_by(|a, b| b.reward.unwrap_or(f32::MIN).total_cmp(&a.reward.unwrap_or(f32::MIN)));
        self.keep(&answers[0])?;
        Ok(answers)
    }

    /// `/compare`'s first half: `k` sampled answers to the last user message, each text once
    /// (a ranking of equal answers teaches a reward model nothing); fewer than two when the
    /// draws all said the same.
    pub fn compare(&mut self, k: usize, out: &mut dyn Output) -> Result<Vec<Answer>> {
        if self.services.prefs.is_none() {
            return Err(needs_prefs("/compare", "rankings"));
        }
        let answers = self.candidates(k, out)?;
        if answers.len() < 2 {
            return Err(anyhow!("fewer than two answers passed moderation; nothing to compare"));
        }
        let mut distinct: Vec<Answer> = Vec::with_capacity(answers.len());
        for answer in answers {
            if !distinct.iter().any(|a| a.content.trim() == answer.content.trim()) {
                distinct.push(answer);
            }
        }
        Ok(distinct)
    }

    /// `/compare`'s second half: `ranking` (indices, best first) is appended to `--prefs` and
    /// the best answer continues the conversation.
    pub fn rank(&mut self, answers: &[Answer], ranking: &[usize]) -> Result<()> {
        let path = self.services.prefs.clone().ok_or_else(|| anyhow!("no --prefs file"))?;
        let best_first: Vec<String> = ranking.iter().map(|&i| answers[i].content.clone()).collect();
        prefs::append(&path, &self.history(), &best_first)?;
        self.keep(&answers[ranking[0]])
    }

    /// `/good` (`good`) or `/bad`: the last answer, with the conversation before it, appended
    /// as a KTO row to the file beside `--prefs`. The file and how many rows it holds now;
    /// `None` when there is no answer to judge (nothing is written).
    pub fn mark(&self, good: bool) -> Result<Option<(PathBuf, usize)>> {
        let command = if good { "/good" } else { "/bad" };
        let prefs =
            self.services.prefs.as_deref().ok_or_else(|| needs_prefs(command, "KTO rows"))?;
        let history = self.history();
        let Some((answer, prompt)) =
            history.split_last().filter(|(m, _)| m.role == Role::Assistant)
        else {
            return Ok(None);
        };
        if prompt.last().is_none_or(|m| m.role != Role::User) {
            return Err(anyhow!(
                "{command}: the last answer does not follow a message of yours, so it makes no KTO row"
            ));
        }
        let path = feedback::kto_file(prefs);
        let rows = feedback::append(&path, prompt, &answer.content, good)?;
        Ok(Some((path, rows)))
    }

    /// Context, cache and speed of the last answer.
    pub fn stats(&self) -> String {
        let Some(answer) = &self.last else {
            return "no answer yet".into();
        };
        let u = answer.usage;
        let first =
            answer.first_token.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
        format!(
            "context: {} tokens of {} ({} turns left out)\ncache: {} of the last prompt's {} tokens reused, {} prefilled\nlast answer: {} tokens, first token after {first}, {:.1} tokens/s",
            u.prompt_tokens + u.completion_tokens,
            self.window,
            self.dropped_told,
            u.cached_tokens,
            u.prompt_tokens,
            u.prompt_tokens - u.cached_tokens,
            u.completion_tokens,
            answer.tokens_per_second(),
        )
    }

    fn drop_last_answer(&mut self) -> Result<()> {
        while self.turns.last().is_some_and(|m| m.role == Role::Assistant) {
            self.turns.pop();
        }
        match self.turns.last() {
            Some(_) => Ok(()),
            None => Err(anyhow!("no message to answer yet")),
        }
    }

    /// The sampler for a drawn answer: sampling (greedy would repeat itself) at the
    /// temperature `/set` shows, with a fresh seed.
    fn draw(&mut self) -> SamplingConfig {
        self.draws += 1;
        self.settings.drawn(self.draws)
    }

    fn candidates(&mut self, k: usize, out: &mut dyn Output) -> Result<Vec<Answer>> {
        self.drop_last_answer()?;
        let mut answers = Vec::with_capacity(k);
        for i in 0..k {
            let sampling = self.draw();
            out.notice(&format!("sampling answer {}/{k}…", i + 1));
            let answer = self.generate(&sampling, false, out)?;
            match answer.finish {
                FinishReason::ContentFilter => out.notice("an answer was flagged and left out"),
                FinishReason::Interrupted => return Err(anyhow!("stopped")),
                _ => answers.push(answer),
            }
        }
        Ok(answers)
    }

    /// Puts an answer into the conversation (one stopped before its first word leaves only
    /// the question: an empty answer is no training data).
    fn keep(&mut self, answer: &Answer) -> Result<()> {
        self.last = Some(answer.clone());
        if answer.content.trim().is_empty() {
            return Ok(());
        }
        self.turns.push(Message::new(Role::Assistant, answer.content.clone()));
        self.log_turn(answer)
    }

    /// Generates the answer to the conversation (which ends with a user message) and adds it,
    /// unless moderation withheld it.
    fn answer(
        &mut self,
        sampling: &SamplingConfig,
        stream: bool,
        out: &mut dyn Output,
    ) -> Result<Answer> {
        let answer = self.generate(sampling, stream, out)?;
        if answer.finish == FinishReason::ContentFilter {
            // The exchange stays out of the context: the model never reads the flagged text.
            self.undo();
            self.last = Some(answer.clone());
        } else {
            self.keep(&answer)?;
        }
        Ok(answer)
    }

    /// Screens a user message; `Some(verdict)` when it is flagged.
    fn screen_input(&mut self, text: &str, out: &mut dyn Output) -> Result<Option<Moderation>> {
        let Some(moderator) = &self.services.moderator else {
            return Ok(None);
        };
        let verdict = moderator.moderate(&[text])?.remove(0);
        if let Some(log) = &mut self.services.log {
            log.moderated(Role::User, text, &verdict)?;
        }
        if self.settings.show_scores {
            out.notice(&format!("moderation (your message): {}", shown_scores(&verdict)));
        }
        Ok(verdict.flagged.then_some(verdict))
    }

    /// What the model reads this turn, telling the user what the window left out.
    fn fit(&mut self, sampling: &SamplingConfig, out: &mut dyn Output) -> Result<Fit> {
        let budget = self.window.saturating_sub(sampling.max_new_tokens);
        if budget == 0 {
            return Err(bad_input!(
                "max_new_tokens {} leaves no room for the conversation in the {}-token context window",
                sampling.max_new_tokens,
                self.window
            ));
        }
        let mut measure = TokenMeasure { tokenizer: self.tokenizer, template: &self.template };
        let fit = context::fit(&self.history(), budget, &mut measure)?;
        if fit.dropped_turns > self.dropped_told {
            let n = fit.dropped_turns;
            out.notice(&format!(
                "context: the {} oldest turn{} no longer fit the {}-token window and {} left out (/save keeps them)",
                n,
                if n == 1 { "" } else { "s" },
                self.window,
                if n == 1 { "is" } else { "are" },
            ));
        }
        self.dropped_told = fit.dropped_turns;
        for role in &fit.cut {
            out.notice(&format!(
                "context: the {} message is longer than the window allows and was cut to fit",
                match role {
                    Role::System => "system",
                    _ => "newest",
                }
            ));
        }
        Ok(fit)
    }

    /// One answer to the conversation as it stands; `stream` sends its text to `out` as it
    /// passes moderation.
    fn generate(
        &mut self,
        sampling: &SamplingConfig,
        stream: bool,
        out: &mut dyn Output,
    ) -> Result<Answer> {
        let fit = self.fit(sampling, out)?;
        let prompt = self
            .template
            .encode_prompt(self.tokenizer, &fit.messages)
            .map_err(|e| bad_input!("{e}"))?;
        let mut text = TextStream::new(self.tokenizer, &self.stops);
        let moderator = self.services.moderator.as_ref();
        let mut screen = moderator.map(|_| Screen::new());
        let mut verdict: Option<Moderation> = None;
        let mut score = |text: &str| -> Result<Moderation> {
            let moderator = moderator.ok_or_else(|| anyhow!("no moderation model"))?;
            let v = moderator.moderate(&[text])?.remove(0);
            verdict = Some(v.clone());
            Ok(v)
        };
        let (mut flagged, mut interrupted, mut failure) = (false, false, None);

        let started = Instant::now();
        let mut first_token = None;
        let guard = interrupt::answering();
        let mut on_token = |token| {
            first_token.get_or_insert_with(|| started.elapsed());
            let piece = text.push(token);
            let verdict = match &mut screen {
                Some(screen) => screen.push(&piece, &mut score),
                None => Ok(Verdict::Show(piece)),
            };
            match emit(verdict, stream, out) {
                Ok(true) => {}
                Ok(false) => {
                    flagged = true;
                    return ControlFlow::Break(());
                }
                Err(e) => {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
            if interrupt::stop_requested() {
                interrupted = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        };
        let (generation, cached) =
            self.generator.reply_to(&mut self.conversation, &prompt, sampling, &mut on_token)?;
        drop(guard);
        let elapsed = started.elapsed();
        if !flagged && failure.is_none() {
            let tail = text.finish();
            let verdict = match &mut screen {
                Some(screen) => screen.finish(&tail, &mut score),
                None => Ok(Verdict::Show(tail)),
            };
            match emit(verdict, stream, out) {
                Ok(passed) => flagged = !passed,
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let content = text.answer();
        if let (Some(log), Some(verdict)) = (&mut self.services.log, &verdict) {
            log.moderated(Role::Assistant, &content, verdict)?;
        }
        let finish = match generation.finish {
            _ if flagged => FinishReason::ContentFilter,
            _ if interrupted => FinishReason::Interrupted,
            Finish::Length => FinishReason::Length,
            Finish::Eos | Finish::Stop | Finish::Cancelled => FinishReason::Stop,
        };
        if let (true, Some(v)) = (self.settings.show_scores, &verdict) {
            out.notice(&format!("moderation (answer): {}", shown_scores(v)));
        }
        if flagged {
            let categories = verdict.as_ref().map(Moderation::category_names).unwrap_or_default();
            out.notice(&format!(
                "[answer withheld: the moderation classifier flagged it for {categories}; it is left out of the conversation]"
            ));
        }
        let reward = match (&self.services.reward, flagged) {
            (Some(reward), false) => {
                Some(reward.score(&[&fit.messages], &[&content], &self.device)?[0])
            }
            _ => None,
        };
        Ok(Answer {
            content: if flagged { String::new() } else { content },
            finish,
            usage: Usage {
                prompt_tokens: prompt.len(),
                cached_tokens: cached,
                completion_tokens: generation.tokens.len(),
            },
            moderation: verdict,
            reward,
            seed: sampling.seed,
            first_token,
            elapsed,
        })
    }

    fn log_turn(&mut self, answer: &Answer) -> Result<()> {
        let history = self.history();
        match &mut self.services.log {
            Some(log) => log.conversation(
                &history,
                &self.settings.sampling,
                answer.seed,
                answer.finish == FinishReason::Interrupted,
            ),
            None => Ok(()),
        }
    }
}

/// What `/compare`, `/good` and `/bad` say without `--prefs`.
fn needs_prefs(command: &str, rows: &str) -> Error {
    anyhow!("{command} needs a file to append {rows} to: start with --prefs FILE")
}

/// Shows text that passed the screen; `Ok(false)` when the screen flagged the answer.
fn emit(verdict: Result<Verdict>, stream: bool, out: &mut dyn Output) -> Result<bool> {
    match verdict? {
        Verdict::Show(piece) => {
            if stream && !piece.is_empty() {
                out.text(&piece);
            }
            Ok(true)
        }
        Verdict::Flagged(_) => Ok(false),
    }
}

/// The scores shown with `show_scores`: those of the flagged categories, the same set a
/// refusal names ("flagged: hate 0.08, violence 0.19"), or the three highest when nothing is
/// flagged ("not flagged (highest: harassment 0.31, hate 0.12, violence 0.03)").
fn shown_scores(verdict: &Moderation) -> String {
    let listed = |scores: &[(&str, f32)]| -> String {
        let parts: Vec<String> = scores.iter().map(|(n, s)| format!("{n} {s:.2}")).collect();
        parts.join(", ")
    };
    if verdict.flagged {
        return format!("flagged: {}", listed(&verdict.flagged_categories()));
    }
    let mut scores: Vec<(&str, f32)> =
        CATEGORIES.iter().zip(verdict.scores).map(|((_, name), s)| (*name, s)).collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1));
    format!("not flagged (highest: {})", listed(&scores[..3]))
}

/// Token counts as the policy's tokenizer and template give them.
struct TokenMeasure<'t> {
    tokenizer: &'t Tokenizer,
    template: &'t ChatTemplate,
}

impl Measure for TokenMeasure<'_> {
    fn prompt_len(&mut self, messages: &[Message]) -> Result<usize> {
        Ok(self
            .template
            .encode_prompt(self.tokenizer, messages)
            .map_err(|e| bad_input!("{e}"))?
            .len())
    }

    fn text_len(&mut self, text: &str) -> Result<usize> {
        Ok(self.ids(text)?.len())
    }

    fn cut(&mut self, text: &str, keep: usize, keep_end: bool) -> Result<String> {
        let ids = self.ids(text)?;
        let kept = match keep_end {
            true => &ids[ids.len().saturating_sub(keep)..],
            false => &ids[..keep.min(ids.len())],
        };
        self.tokenizer.decode(kept, false).map_err(|e| anyhow!("decoding: {e}"))
    }
}

impl TokenMeasure<'_> {
    fn ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding =
            self.tokenizer.encode(text, false).map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::moderation::NUM_CATEGORIES;

    /// Issue 48: with scores shown, a message read `flagged (violence 0.19, violence/graphic
    /// 0.19, self-harm 0.13)` — the three highest scores — while the refusal named hate,
    /// violence, hate/threatening and violence/graphic, flagged at their low thresholds.
    #[test]
    fn shown_scores_name_the_flagged_categories() {
        // sexual, hate, violence, harassment, self-harm, sexual/minors, hate/threatening,
        // violence/graphic
        let scores = [0.01, 0.08, 0.12, 0.02, 0.13, 0.01, 0.07, 0.19];
        let thresholds = [0.5, 0.05, 0.5, 0.5, 0.5, 0.5, 0.05, 0.1];
        let verdict = Moderation::new(scores, &thresholds);
        let refusal = verdict.category_names();
        assert_eq!(refusal, "hate, violence, hate/threatening and violence/graphic");
        let shown = shown_scores(&verdict);
        assert_eq!(
            shown,
            "flagged: hate 0.08, violence 0.19, hate/threatening 0.07, violence/graphic 0.19"
        );
        let calm = Moderation::new(scores, &[0.9; NUM_CATEGORIES]);
        assert_eq!(
            shown_scores(&calm),
            "not flagged (highest: violence 0.19, violence/graphic 0.19, self-harm 0.13)"
        );
    }
}
