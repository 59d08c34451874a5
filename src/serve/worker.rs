//! The model's thread: it owns the model, takes requests from a queue and decodes every answer
//! in flight together (continuous batching): between two steps, new requests are prefilled and
//! join the batch, finished ones leave it, and those whose client went away are dropped. A
//! finished conversation's KV cache is kept for a follow-up turn that starts with its tokens.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use tokenizers::Tokenizer;
use tokio::sync::{mpsc, oneshot};

use super::api::{FinishReason, Usage};
use crate::generate::engine::common_prefix_len;
use crate::generate::{Conversation, Generator, LiveBatch, RowSampler, RowSampling, TextStream};
use crate::moderation::screen::{Screen, Verdict};
use crate::moderation::{Moderation, Moderator};

/// Work for the model's thread.
pub enum Job {
    Generate(Generation),
    Moderate { texts: Vec<String>, reply: oneshot::Sender<Result<Vec<Moderation>>> },
}

/// One request for completions: `n` answers to each prompt.
pub struct Generation {
    pub prompts: Vec<Vec<u32>>,
    pub n: usize,
    /// Choice `i` samples with seed `sampling.seed + i`.
    pub sampling: RowSampling,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// The user's message, screened before anything is generated.
    pub screen: Option<String>,
    pub events: mpsc::UnboundedSender<Event>,
}

/// What a request hears back, in order; the channel closes after `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Text { choice: usize, text: String },
    Finished { choice: usize, reason: FinishReason },
    Done(Usage),
    Failed(String),
}

/// Limits of the model's thread.
pub struct Limits {
    pub max_batch: usize,
    pub prompt_cache: usize,
}

/// One answer being decoded: a row of the batch.
struct Row<'t> {
    request: usize,
    choice: usize,
    /// Whether its conversation is worth keeping for a follow-up (the first answer of a prompt).
    keep_cache: bool,
    sampler: RowSampler,
    text: TextStream<'t>,
    screen: Option<Screen>,
    generated: usize,
    max_tokens: usize,
}

struct Request {
    events: mpsc::UnboundedSender<Event>,
    open: usize,
    usage: Usage,
}

pub struct Worker<'a> {
    generator: Generator<'a>,
    tokenizer: &'a Tokenizer,
    moderator: Option<&'a Moderator>,
    limits: Limits,
    /// Requests waiting, counted where the HTTP side can see it (to answer 429).
    queued: Arc<AtomicUsize>,
    batch: LiveBatch,
    rows: Vec<Row<'a>>,
    requests: Vec<Option<Request>>,
    /// Finished conversations, most recent first.
    prompt_cache: Vec<Conversation>,
}

impl<'a> Worker<'a> {
    pub fn new(
        generator: Generator<'a>,
        tokenizer: &'a Tokenizer,
        moderator: Option<&'a Moderator>,
        limits: Limits,
        queued: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            generator,
            tokenizer,
            moderator,
            limits,
            queued,
            batch: LiveBatch::new(),
            rows: Vec::new(),
            requests: Vec::new(),
            prompt_cache: Vec::new(),
        }
    }

    /// Serves jobs until the queue closes and the last answer is done.
    pub fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut waiting: Option<Generation> = None;
        let mut open = true;
        loop {
            // Admit what fits between two steps; block only when there is nothing to decode.
            loop {
                if let Some(job) = waiting.take() {
                    if self.rows.len() + job.prompts.len() * job.n > self.limits.max_batch {
                        waiting = Some(job);
                        break;
                    }
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    self.admit(job);
                    continue;
                }
                let job = if self.rows.is_empty() && open {
                    jobs.blocking_recv()
                } else {
                    jobs.try_recv().ok()
                };
                match job {
                    Some(Job::Generate(job)) => waiting = Some(job),
                    Some(Job::Moderate { texts, reply }) => {
                        let _ = reply.send(self.moderate(&texts));
                    }
                    None => {
                        open = open && !jobs.is_closed();
                        break;
                    }
                }
            }
            if self.rows.is_empty() {
                if !open && waiting.is_none() {
                    return;
                }
                continue;
            }
            self.step();
        }
    }

    fn moderate(&self, texts: &[String]) -> Result<Vec<Moderation>> {
        let moderator = self.moderator.expect("moderation jobs only with a moderator");
        moderator.moderate(&texts.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Prefills a request's prompts (from the prompt cache where one shares their start) and
    /// adds its answers to the batch; a flagged message is refused without generating.
    fn admit(&mut self, job: Generation) {
        if job.events.is_closed() {
            return;
        }
        let prompt_tokens = job.prompts.iter().map(Vec::len).sum();
        let mut usage = Usage { prompt_tokens, ..Usage::default() };
        let choices = job.prompts.len() * job.n;
        if let (Some(moderator), Some(text)) = (self.moderator, &job.screen) {
            let verdict = match moderator.moderate(&[text.as_str()]) {
                Ok(mut verdicts) => verdicts.remove(0),
                Err(e) => return fail(&job.events, format!("moderation: {e:#}")),
            };
            if verdict.flagged {
                for choice in 0..choices {
                    let _ = job.events.send(Event::Text { choice, text: verdict.refusal() });
                    let reason = FinishReason::ContentFilter;
                    let _ = job.events.send(Event::Finished { choice, reason });
                }
                let _ = job.events.send(Event::Done(usage));
                return;
            }
        }
        let request = self.requests.iter().position(Option::is_none).unwrap_or_else(|| {
            self.requests.push(None);
            self.requests.len() - 1
        });
        for (p, prompt) in job.prompts.iter().enumerate() {
            let mut conversation = self.cached_conversation(prompt);
            let (logits, cached) = match self.generator.prefill(&mut conversation, prompt) {
                Ok(prefilled) => prefilled,
                Err(e) => return fail(&job.events, format!("{e:#}")),
            };
            usage.cached_tokens += cached;
            for j in 0..job.n {
                // Answers to one prompt share its prefill.
                self.batch.join(conversation.clone(), logits.clone());
                let choice = p * job.n + j;
                let sampling = RowSampling {
                    seed: job.sampling.seed.wrapping_add(choice as u64),
                    ..job.sampling.clone()
                };
                self.rows.push(Row {
                    request,
                    choice,
                    keep_cache: j == 0,
                    sampler: RowSampler::new(sampling),
                    text: TextStream::new(self.tokenizer, &job.stop),
                    screen: self.moderator.map(|_| Screen::new()),
                    generated: 0,
                    max_tokens: job.max_tokens,
                });
            }
        }
        self.requests[request] = Some(Request { events: job.events, open: choices, usage });
    }

    /// The cached conversation that shares the longest start with `prompt` (taken out of the
    /// cache: it is extended from here), or a new one.
    fn cached_conversation(&mut self, prompt: &[u32]) -> Conversation {
        let best = self
            .prompt_cache
            .iter()
            .enumerate()
            .map(|(i, c)| (common_prefix_len(&c.tokens(), prompt), i))
            .max();
        match best {
            Some((shared, i)) if shared > 0 => self.prompt_cache.remove(i),
            _ => self.generator.conversation(),
        }
    }

    /// One token for every row: chosen, streamed, checked for its end; then the rows still
    /// going are fed their tokens in one forward pass.
    fn step(&mut self) {
        let logits = self.batch.logits();
        let vocab = logits.len() / self.rows.len();
        let mut kept: Vec<(usize, u32)> = Vec::new();
        let mut finished = Vec::new();
        for (i, row) in self.rows.iter_mut().enumerate() {
            let Some(request) = self.requests[row.request].as_mut() else { continue };
            if request.events.is_closed() {
                // The client went away: its answers stop costing work now.
                self.requests[row.request] = None;
                continue;
            }
            let token = row.sampler.choose(&logits[i * vocab..(i + 1) * vocab]);
            row.generated += 1;
            request.usage.completion_tokens += 1;
            let eos = self.generator.eos().contains(&token);
            let mut text = if eos { String::new() } else { row.text.push(token) };
            let mut finish = match () {
                _ if eos || row.text.stopped() => Some(FinishReason::Stop),
                _ if row.generated >= row.max_tokens => Some(FinishReason::Length),
                _ => None,
            };
            if finish.is_some() {
                text.push_str(&row.text.finish());
            }
            if let (Some(screen), Some(moderator)) = (row.screen.as_mut(), self.moderator) {
                let mut score = |text: &str| Ok(moderator.moderate(&[text])?.remove(0));
                let verdict = match finish {
                    Some(_) => screen.finish(&text, &mut score),
                    None => screen.push(&text, &mut score),
                };
                match verdict {
                    Ok(Verdict::Show(shown)) => text = shown,
                    Ok(Verdict::Flagged(_)) => {
                        text.clear();
                        finish = Some(FinishReason::ContentFilter);
                    }
                    Err(e) => {
                        fail(&request.events, format!("moderation: {e:#}"));
                        self.requests[row.request] = None;
                        continue;
                    }
                }
            }
            if !text.is_empty() {
                let _ = request.events.send(Event::Text { choice: row.choice, text });
            }
            let Some(reason) = finish else {
                kept.push((i, token));
                continue;
            };
            let _ = request.events.send(Event::Finished { choice: row.choice, reason });
            if row.keep_cache && reason != FinishReason::ContentFilter {
                finished.push(self.batch.detach(i, token));
            }
            request.open -= 1;
            if request.open == 0 {
                let _ = request.events.send(Event::Done(request.usage));
                self.requests[row.request] = None;
            }
        }
        for conversation in finished {
            self.prompt_cache.insert(0, conversation);
        }
        self.prompt_cache.truncate(self.limits.prompt_cache);
        // Rows of a request that failed or went away leave too.
        kept.retain(|&(i, _)| self.requests[self.rows[i].request].is_some());
        let (keep, next): (Vec<usize>, Vec<u32>) = kept.into_iter().unzip();
        self.batch.retain(&keep);
        let rows = std::mem::take(&mut self.rows);
        let mut rows: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
        self.rows = keep.iter().map(|&i| rows[i].take().expect("each row kept once")).collect();
        if !self.rows.is_empty() {
            self.generator.step(&mut self.batch, &next);
        }
    }
}

fn fail(events: &mpsc::UnboundedSender<Event>, message: String) {
    let _ = events.send(Event::Failed(message));
}
