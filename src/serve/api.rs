//! The OpenAI API's shapes: requests parsed (an error names the field, as OpenAI's `param`),
//! responses and stream chunks built, and errors in OpenAI's form, so that its clients raise
//! the matching exception (`BadRequestError`, `AuthenticationError`, `RateLimitError`, …).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::data::chat::{Message, Role};

/// An error as OpenAI returns it: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400: the request itself is wrong; `param` names the field.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect or missing API key: send `Authorization: Bearer KEY` with the key the server was started with (--api-key)".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 429: the queue is full; the client may retry (the `Retry-After` header says when).
    pub fn busy(queued: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("The server is busy: {queued} requests are waiting. Retry shortly."),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, ..Self::internal(message) }
    }

    pub fn to_json(&self) -> Value {
        json!({"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.to_json())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A request body as JSON.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("The request body is not valid JSON: {e}")))
}

/// One view of a request body (the prompt, the options); a wrong field is a 400 naming it.
pub fn parse<'a, T: Deserialize<'a>>(body: &'a Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = format!("Invalid value for `{path}`: {}", e.inner());
        ApiError::invalid((path != ".").then_some(path.as_str()), message)
    })
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content: a string, or a list of parts of which only text is understood.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Texts,
}

/// A string or a list of them, as `prompt`, `input` and `stop` take.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Texts {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/moderations`.
#[derive(Debug, Deserialize)]
pub struct ModerationRequest {
    pub input: Texts,
}

/// What both completion endpoints take besides the prompt.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Not OpenAI's, but vLLM's, llama.cpp's and ollama's.
    pub top_k: Option<usize>,
    pub n: Option<usize>,
    pub seed: Option<i64>,
    pub stop: Option<Texts>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

impl Options {
    /// `max_completion_tokens` (the newer name) or `max_tokens`.
    pub fn max_tokens(&self) -> Option<(usize, &'static str)> {
        match (self.max_completion_tokens, self.max_tokens) {
            (Some(n), _) => Some((n, "max_completion_tokens")),
            (None, Some(n)) => Some((n, "max_tokens")),
            (None, None) => None,
        }
    }

    pub fn stop(&self) -> Result<Vec<String>, ApiError> {
        let stops = self.stop.as_ref().map_or_else(Vec::new, Texts::texts);
        if stops.len() > 4 || stops.iter().any(String::is_empty) {
            return Err(ApiError::invalid(Some("stop"), "stop takes up to 4 non-empty strings"));
        }
        Ok(stops)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}

impl Texts {
    pub fn texts(&self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text.clone()],
            Self::Many(texts) => texts.clone(),
        }
    }
}

impl ChatRequest {
    /// The conversation, and the last user message (what the moderation screen reads).
    pub fn conversation(&self) -> Result<(Vec<Message>, Option<String>), ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(Some("messages"), "messages must not be empty"));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, message) in self.messages.iter().enumerate() {
            let param = |field: &str| format!("messages[{i}].{field}");
            let role = match message.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ApiError::invalid(
                        Some(&param("role")),
                        format!(
                            "unsupported role `{other}` (this server takes system, developer, user and assistant)"
                        ),
                    ));
                }
            };
            let content = match &message.content {
                None => String::new(),
                Some(Content::Text(text)) => text.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    Some(&param("content")),
                                    format!("unsupported content part `{kind}` (text only)"),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            messages.push(Message::new(role, content));
        }
        let last_user =
            messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.clone());
        Ok((messages, last_user))
    }
}

/// Why a choice ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ContentFilter => "content_filter",
        }
    }
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values came from the prompt cache.
    pub cached_tokens: usize,
}

impl Usage {
    pub fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

/// Which endpoint a generation answers, for the shapes of its responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// The fields every response and chunk of one request share.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Envelope {
    /// A whole response: each choice's text and finish reason, in order.
    pub fn response(&self, choices: &[(String, FinishReason)], usage: Usage) -> Value {
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(index, (text, finish))| match self.endpoint {
                Endpoint::Chat => json!({
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": null,
                    "finish_reason": finish.as_str(),
                }),
                Endpoint::Completion => json!({
                    "index": index, "text": text, "logprobs": null, "finish_reason": finish.as_str(),
                }),
            })
            .collect();
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion",
            Endpoint::Completion => "text_completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": choices, "usage": usage.to_json(),
        })
    }

    /// A stream chunk for one choice: its first (the role), some text, or its end.
    pub fn chunk(&self, index: usize, piece: Piece) -> Value {
        let finish = match piece {
            Piece::Finish(reason) => Value::from(reason.as_str()),
            _ => Value::Null,
        };
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let delta = match piece {
                    Piece::Role => json!({"role": "assistant", "content": ""}),
                    Piece::Text(text) => json!({"content": text}),
                    Piece::Finish(_) => json!({}),
                };
                json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Completion => {
                let text = match piece {
                    Piece::Text(text) => text,
                    _ => "",
                };
                json!({"index": index, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        self.chunk_of(vec![choice], Value::Null)
    }

    /// The last chunk with `stream_options.include_usage`: no choices, the usage.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        self.chunk_of(Vec::new(), usage.to_json())
    }

    fn chunk_of(&self, choices: Vec<Value>, usage: Value) -> Value {
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": choices, "usage": usage,
        })
    }
}

/// What a stream chunk carries for its choice.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    Role,
    Text(&'a str),
    Finish(FinishReason),
}
