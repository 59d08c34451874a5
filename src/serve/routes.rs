//! The HTTP side: OpenAI's routes, the API key, a log line per request. Handlers check and
//! encode a request, queue it for the model's thread and turn what it sends back into a
//! response or a stream of server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokenizers::Tokenizer;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::api::{
    ApiError, ChatRequest, CompletionRequest, Endpoint, Envelope, FinishReason, ModerationRequest,
    Options, Piece, parse, parse_body,
};
use super::worker::{Event, Generation, Job};
use crate::data::template::ChatTemplate;
use crate::generate::{RowSampling, SamplingConfig};

/// The largest request body read (a longer one is a 400).
pub const MAX_BODY: usize = 4 << 20;

/// What every handler shares.
pub struct Shared {
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// The model's context window: prompt and answer together.
    pub window: usize,
    /// `--max-tokens`: the most a request may ask for, and the default.
    pub max_tokens: usize,
    pub max_batch: usize,
    pub max_queue: usize,
    /// The model's own decoding defaults (generation_config.json), for what a request omits.
    pub defaults: SamplingConfig,
    pub model_id: String,
    pub moderation_id: Option<String>,
    pub created: u64,
    pub api_key: Option<String>,
    pub jobs: mpsc::UnboundedSender<Job>,
    /// Generation requests waiting for a place in the batch.
    pub queued: Arc<AtomicUsize>,
    pub next_id: AtomicU64,
}

type AppState = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/moderations", post(moderations))
        .route("/v1/models", get(models))
        .route_layer(from_fn_with_state(shared.clone(), require_key))
        .route("/health", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .fallback(|| async { ApiError::not_found("No such route: see /v1/models") })
        .layer(from_fn(log_request))
        .with_state(shared)
}

/// One line per request on stderr: method, path, status, time to the response's head.
async fn log_request(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    eprintln!("{method} {path} {} {ms:.1} ms", response.status().as_u16());
    response
}

async fn require_key(State(shared): AppState, request: Request, next: Next) -> Response {
    if let Some(key) = &shared.api_key {
        let given = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")) != Some(key.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

async fn read_body(body: Body) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::invalid(None, format!("The request body is larger than {} MiB", MAX_BODY >> 20))
    })?;
    parse_body(&bytes)
}

async fn chat_completions(State(shared): AppState, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let (request, options): (ChatRequest, Options) = (parse(&body)?, parse(&body)?);
    let (messages, last_user) = request.conversation()?;
    let prompt = shared
        .template
        .encode_prompt(&shared.tokenizer, &messages)
        .map_err(|e| ApiError::invalid(Some("messages"), e))?;
    generate(&shared, Endpoint::Chat, vec![prompt], &options, last_user).await
}

async fn completions(State(shared): AppState, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let (request, options): (CompletionRequest, Options) = (parse(&body)?, parse(&body)?);
    let mut prompts = Vec::new();
    for text in request.prompt.texts() {
        let encoding = shared
            .tokenizer
            .encode(text.as_str(), true)
            .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))?;
        if encoding.get_ids().is_empty() {
            return Err(ApiError::invalid(Some("prompt"), "The prompt encodes to no tokens"));
        }
        prompts.push(encoding.get_ids().to_vec());
    }
    if prompts.is_empty() {
        return Err(ApiError::invalid(Some("prompt"), "prompt must not be an empty list"));
    }
    generate(&shared, Endpoint::Completion, prompts, &options, None).await
}

/// Checks a generation's options, queues it and answers: whole, or streamed as it comes.
async fn generate(
    shared: &Shared,
    endpoint: Endpoint,
    prompts: Vec<Vec<u32>>,
    options: &Options,
    screen: Option<String>,
) -> Result<Response, ApiError> {
    let n = options.n.unwrap_or(1);
    let choices = n * prompts.len();
    if n == 0 || choices > shared.max_batch {
        let message = format!(
            "n × prompts is {choices}; this server decodes 1 to {} answers at once (--max-batch)",
            shared.max_batch
        );
        return Err(ApiError::invalid(Some("n"), message));
    }
    let sampling = row_sampling(&shared.defaults, options)?;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let room = shared.window.saturating_sub(longest);
    let max_tokens = match options.max_tokens() {
        Some((0, param)) => {
            return Err(ApiError::invalid(Some(param), format!("{param} must be at least 1")));
        }
        Some((n, param)) if n > shared.max_tokens => {
            let message = format!(
                "{param} is {n}; this server allows at most {} (--max-tokens)",
                shared.max_tokens
            );
            return Err(ApiError::invalid(Some(param), message));
        }
        Some((n, _)) => n,
        None => shared.max_tokens.min(room),
    };
    if max_tokens == 0 || longest + max_tokens > shared.window {
        let message = format!(
            "This model's maximum context length is {} tokens. However, you requested {} tokens ({longest} in the prompt, {max_tokens} for the completion).",
            shared.window,
            longest + max_tokens.max(1)
        );
        let param = match endpoint {
            Endpoint::Chat => "messages",
            Endpoint::Completion => "prompt",
        };
        return Err(ApiError::invalid(Some(param), message).with_code("context_length_exceeded"));
    }
    let stop = options.stop()?;

    let (events, receiver) = mpsc::unbounded_channel();
    let job = Generation { prompts, n, sampling, max_tokens, stop, screen, events };
    if shared.queued.fetch_add(1, Ordering::SeqCst) >= shared.max_queue {
        let queued = shared.queued.fetch_sub(1, Ordering::SeqCst) - 1;
        return Err(ApiError::busy(queued));
    }
    if shared.jobs.send(Job::Generate(job)).is_err() {
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::unavailable("The server is shutting down"));
    }
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    };
    let envelope = Envelope {
        endpoint,
        id: format!("{prefix}-{}", shared.next_id.fetch_add(1, Ordering::Relaxed)),
        created: now(),
        model: shared.model_id.clone(),
    };
    if options.stream {
        Ok(stream(envelope, choices, options.include_usage(), receiver).into_response())
    } else {
        whole(envelope, choices, receiver).await
    }
}

/// A request's sampling: what it sets, the model's defaults for what it does not.
fn row_sampling(defaults: &SamplingConfig, options: &Options) -> Result<RowSampling, ApiError> {
    let temperature = match options.temperature {
        Some(t) if !(0.0..=2.0).contains(&t) => {
            return Err(ApiError::invalid(
                Some("temperature"),
                "temperature must be between 0 and 2",
            ));
        }
        Some(t) => t,
        None if defaults.do_sample => defaults.temperature,
        None => 0.0,
    };
    let top_p = options.top_p.unwrap_or(if defaults.do_sample { defaults.top_p } else { 1.0 });
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(Some("top_p"), "top_p must be above 0 and at most 1"));
    }
    let penalty = |value: Option<f32>, param: &str| match value.unwrap_or(0.0) {
        p if (-2.0..=2.0).contains(&p) => Ok(p),
        _ => Err(ApiError::invalid(Some(param), format!("{param} must be between -2 and 2"))),
    };
    Ok(RowSampling {
        temperature,
        top_p,
        top_k: options.top_k.unwrap_or(if defaults.do_sample { defaults.top_k } else { 0 }),
        presence_penalty: penalty(options.presence_penalty, "presence_penalty")?,
        frequency_penalty: penalty(options.frequency_penalty, "frequency_penalty")?,
        // Without a seed, each request gets its own.
        seed: options.seed.map_or_else(fresh_seed, |s| s as u64),
    })
}

/// Collects every choice, then answers once.
async fn whole(
    envelope: Envelope,
    choices: usize,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Result<Response, ApiError> {
    let mut answers = vec![(String::new(), FinishReason::Stop); choices];
    while let Some(event) = events.recv().await {
        match event {
            Event::Text { choice, text } => answers[choice].0.push_str(&text),
            Event::Finished { choice, reason } => answers[choice].1 = reason,
            Event::Done(usage) => {
                return Ok(axum::Json(envelope.response(&answers, usage)).into_response());
            }
            Event::Failed(message) => return Err(ApiError::internal(message)),
        }
    }
    Err(ApiError::internal("The model's thread stopped before the answer was done"))
}

/// Server-sent events: a first chunk per choice (chat: the role), text as the model writes
/// it, each choice's finish, the usage when asked for, then `[DONE]`. A client that goes away
/// drops this stream, and with it the channel: the model's thread drops its rows.
fn stream(
    envelope: Envelope,
    choices: usize,
    include_usage: bool,
    events: mpsc::UnboundedReceiver<Event>,
) -> Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>> {
    let data = |value: Value| Ok::<_, Infallible>(SseEvent::default().data(value.to_string()));
    let first: Vec<_> = match envelope.endpoint {
        Endpoint::Chat => (0..choices).map(|i| data(envelope.chunk(i, Piece::Role))).collect(),
        Endpoint::Completion => Vec::new(),
    };
    let body = UnboundedReceiverStream::new(events).filter_map(move |event| match event {
        Event::Text { choice, text } => Some(data(envelope.chunk(choice, Piece::Text(&text)))),
        Event::Finished { choice, reason } => {
            Some(data(envelope.chunk(choice, Piece::Finish(reason))))
        }
        Event::Done(usage) => include_usage.then(|| data(envelope.usage_chunk(usage))),
        Event::Failed(message) => Some(data(ApiError::internal(message).to_json())),
    });
    let done = tokio_stream::once(Ok(SseEvent::default().data("[DONE]")));
    Sse::new(tokio_stream::iter(first).chain(body).chain(done))
}

async fn moderations(State(shared): AppState, body: Body) -> Result<Response, ApiError> {
    let request: ModerationRequest = parse(&read_body(body).await?)?;
    let Some(model) = shared.moderation_id.clone() else {
        return Err(ApiError::not_found(
            "This server has no moderation model: start it with --moderation DIR",
        ));
    };
    let texts = request.input.texts();
    if texts.is_empty() {
        return Err(ApiError::invalid(Some("input"), "input must not be an empty list"));
    }
    let (reply, verdicts) = oneshot::channel();
    if shared.jobs.send(Job::Moderate { texts, reply }).is_err() {
        return Err(ApiError::unavailable("The server is shutting down"));
    }
    let verdicts = verdicts
        .await
        .map_err(|_| ApiError::internal("The model's thread stopped"))?
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let id = format!("modr-{}", shared.next_id.fetch_add(1, Ordering::Relaxed));
    let results: Vec<Value> = verdicts.iter().map(|v| v.to_json()).collect();
    Ok(axum::Json(json!({"id": id, "model": model, "results": results})).into_response())
}

async fn models(State(shared): AppState) -> axum::Json<Value> {
    let model = |id: &str| json!({"id": id, "object": "model", "created": shared.created, "owned_by": "rlhf"});
    let mut data = vec![model(&shared.model_id)];
    data.extend(shared.moderation_id.as_deref().map(model));
    axum::Json(json!({"object": "list", "data": data}))
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
