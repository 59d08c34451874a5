//! The model's thread: it owns the model, takes requests from a queue and decodes every answer
//! in flight together (continuous batching): between two steps, new requests are prefilled and
//! join the batch, finished ones leave it, and those whose client went away are dropped. A
//! finished conversation's KV cache is kept for a follow-up turn that starts with its tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use tokenizers::Tokenizer;
use tokio::sync::{mpsc, oneshot};

use super::api::{FinishReason, Usage};
use crate::generate::engine::common_prefix_len;
use crate::generate::live_batch::Prefilled;
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
    request: u64,
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
    /// The requests with answers in the batch, by id.
    requests: HashMap<u64, Request>,
    next_request: u64,
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
            requests: HashMap::new(),
            next_request: 0,
            prompt_cache: Vec::new(),
        }
    }

    /// Serves jobs until the queue closes and the last answer is done.
    pub fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut waiting: Option<Generation> = None;
        let mut open = true;
        loop {
            // Take what fits between two steps; block only when there is nothing to decode.
            let mut admitted = Vec::new();
            let mut rows = self.rows.len();
            loop {
                if let Some(job) = waiting.take() {
                    if rows + job.prompts.len() * job.n > self.limits.max_batch {
                        waiting = Some(job);
                        break;
                    }
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    rows += job.prompts.len() * job.n;
                    admitted.push(job);
                    continue;
                }
                let job =
                    if rows == 0 && open { jobs.blocking_recv() } else { jobs.try_recv().ok() };
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
            self.admit(admitted);
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

    /// Prefills the requests' prompts and adds their answers to the batch: a prompt that
    /// starts with a cached conversation from there, the others together in one forward pass.
    /// A flagged message is refused without generating.
    fn admit(&mut self, jobs: Vec<Generation>) {
        let mut fresh: Vec<Vec<u32>> = Vec::new();
        // Per row of the fresh block: its prompt in `fresh`, and the row itself.
        let mut fresh_rows: Vec<(usize, Row<'a>)> = Vec::new();
        for job in jobs {
            if job.events.is_closed() || self.refused(&job) {
                continue;
            }
            let id = self.next_request;
            self.next_request += 1;
            let prompt_tokens = job.prompts.iter().map(Vec::len).sum();
            let mut usage = Usage { prompt_tokens, ..Usage::default() };
            for (p, prompt) in job.prompts.iter().enumerate() {
                let rows: Vec<Row> =
                    (0..job.n).map(|j| self.row(id, &job, p * job.n + j, j == 0)).collect();
                let Some(mut conversation) = self.cached_conversation(prompt) else {
                    fresh_rows.extend(rows.into_iter().map(|row| (fresh.len(), row)));
                    fresh.push(prompt.clone());
                    continue;
                };
                match self.generator.prefill(&mut conversation, prompt) {
                    Ok((logits, cached)) => {
                        usage.cached_tokens += cached;
                        let prefilled = Prefilled::conversation(conversation, logits);
                        self.batch.join(prefilled.select(&vec![0; job.n]));
                        self.rows.extend(rows);
                    }
                    // Rows already joined leave at the next step: their request is gone.
                    Err(e) => return fail(&job.events, format!("{e:#}")),
                }
            }
            let choices = job.prompts.len() * job.n;
            self.requests.insert(id, Request { events: job.events, open: choices, usage });
        }
        if !fresh.is_empty() {
            let (index, rows): (Vec<usize>, Vec<Row>) = fresh_rows.into_iter().unzip();
            self.batch.join(self.generator.prefill_batch(&fresh).select(&index));
            self.rows.extend(rows);
        }
    }

    /// Screens the user's message; a flagged one gets the refusal as every answer.
    fn refused(&self, job: &Generation) -> bool {
        let (Some(moderator), Some(text)) = (self.moderator, &job.screen) else { return false };
        let verdict = match moderator.moderate(&[text.as_str()]) {
            Ok(mut verdicts) => verdicts.remove(0),
            Err(e) => {
                fail(&job.events, format!("moderation: {e:#}"));
                return true;
            }
        };
        if !verdict.flagged {
            return false;
        }
        for choice in 0..job.prompts.len() * job.n {
            let _ = job.events.send(Event::Text { choice, text: verdict.refusal() });
            let reason = FinishReason::ContentFilter;
            let _ = job.events.send(Event::Finished { choice, reason });
        }
        let prompt_tokens = job.prompts.iter().map(Vec::len).sum();
        let _ = job.events.send(Event::Done(Usage { prompt_tokens, ..Usage::default() }));
        true
    }

    /// A new row for answer `choice` of request `id`.
    fn row(&self, id: u64, job: &Generation, choice: usize, keep_cache: bool) -> Row<'a> {
        let seed = job.sampling.seed.wrapping_add(choice as u64);
        Row {
            request: id,
            choice,
            keep_cache,
            sampler: RowSampler::new(RowSampling { seed, ..job.sampling.clone() }),
            text: TextStream::new(self.tokenizer, &job.stop),
            screen: self.moderator.map(|_| Screen::new()),
            generated: 0,
            max_tokens: job.max_tokens,
        }
    }

    /// The cached conversation that shares the longest start with `prompt`, taken out of the
    /// cache (it is extended from here); `None` when none shares a token.
    fn cached_conversation(&mut self, prompt: &[u32]) -> Option<Conversation> {
        let best = self
            .prompt_cache
            .iter()
            .enumerate()
            .map(|(i, c)| (common_prefix_len(&c.tokens(), prompt), i))
            .max()?;
        (best.0 > 0).then(|| self.prompt_cache.remove(best.1))
    }

    /// One token for every row: chosen, streamed, checked for its end; then the rows still
    /// going are fed their tokens in one forward pass.
    fn step(&mut self) {
        let logits = self.batch.logits();
        let vocab = logits.len() / self.rows.len();
        let mut kept: Vec<(usize, u32)> = Vec::new();
        let mut finished = Vec::new();
        for (i, row) in self.rows.iter_mut().enumerate() {
            let Some(request) = self.requests.get_mut(&row.request) else { continue };
            if request.events.is_closed() {
                // The client went away: its answers stop costing work now.
                let tokens = request.usage.completion_tokens;
                eprintln!("client went away: its answer left the batch after {tokens} tokens");
                self.requests.remove(&row.request);
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
                        self.requests.remove(&row.request);
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
                self.requests.remove(&row.request);
            }
        }
        for conversation in finished {
            self.prompt_cache.insert(0, conversation);
        }
        self.prompt_cache.truncate(self.limits.prompt_cache);
        // Rows of a request that failed or went away leave too.
        kept.retain(|&(i, _)| self.requests.contains_key(&self.rows[i].request));
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
