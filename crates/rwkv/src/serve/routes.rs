//! HTTP routes: the OpenAI-compatible endpoints, `/v1/models`, `/health`, `/metrics`, the API key
//! check, and turning scheduler events into JSON answers or server-sent events.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rwkv_core::sampler::StopMatcher;
use rwkv_core::tokenizer::Vocab;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower_http::catch_panic::CatchPanicLayer;

use super::metrics::Metrics;
use super::scheduler::{Event, Job, NamedState, SchedulerHandle};
use super::wire::{
    chat_prompt, check_logit_bias, parse_body, usage_json, ApiError, ChatRequest,
    CompletionRequest, PromptField, Settings, DEFAULT_CHAT_TOKENS, DEFAULT_COMPLETION_TOKENS,
};

/// Largest request body: a prompt of a megabyte is already far past any sensible context for a
/// chat request, and the body is held in memory while it is parsed.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The end-of-text token, fed when a completion prompt is empty (RWKV models start from it).
const END_OF_TEXT: u32 = 0;

/// What every handler shares.
pub struct AppState {
    pub scheduler: SchedulerHandle,
    pub vocab: Arc<Vocab>,
    pub vocab_size: usize,
    pub model_name: String,
    pub api_key: Option<String>,
    pub metrics: Arc<Metrics>,
    pub states: HashMap<String, Arc<NamedState>>,
    pub max_prompt_tokens: usize,
    pub started: u64,
    pub next_id: AtomicU64,
}

pub fn router(app: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            require_key,
        ));
    Router::new()
        .merge(protected)
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::new())
        .with_state(app)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Compares without stopping at the first difference, so timing does not reveal the key.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_key(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.trim().as_bytes(), key.as_bytes())) {
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: "missing or wrong API key (Authorization: Bearer KEY)".into(),
                kind: "authentication_error",
                param: None,
                code: Some("invalid_api_key"),
            }
            .into_response();
        }
    }
    next.run(req).await
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint".into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("not_found"),
    }
}

async fn models(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.model_name,
            "object": "model",
            "created": app.started,
            "owned_by": "rwkv-hybrid",
        }],
    }))
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    (headers, app.metrics.render()).into_response()
}

fn body_error(r: BytesRejection) -> ApiError {
    ApiError {
        status: r.status(),
        message: format!(
            "request body unreadable or over the {MAX_BODY_BYTES}-byte limit: {}",
            r.body_text()
        ),
        kind: "invalid_request_error",
        param: None,
        code: None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

async fn completions(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let req: CompletionRequest = parse_body(&body)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "suffix is not supported",
            Some("suffix"),
        ));
    }
    let settings = req.common.settings(
        &app.model_name,
        DEFAULT_COMPLETION_TOKENS,
        &[],
        fallback_seed(&app),
    )?;
    let mut prompt = match req.prompt {
        None => Vec::new(),
        Some(PromptField::Text(t)) => app.vocab.encode(t.as_bytes()),
        Some(PromptField::Texts(v)) if v.len() == 1 => app.vocab.encode(v[0].as_bytes()),
        Some(PromptField::Texts(_)) => {
            return Err(ApiError::bad_request(
                "one prompt per request",
                Some("prompt"),
            ))
        }
        Some(PromptField::Tokens(ids)) => {
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= app.vocab_size) {
                return Err(ApiError::bad_request(
                    format!(
                        "token id {bad} is outside the vocabulary [0, {})",
                        app.vocab_size
                    ),
                    Some("prompt"),
                ));
            }
            ids
        }
    };
    if prompt.is_empty() {
        prompt.push(END_OF_TEXT);
    }
    run(app, settings, prompt, Kind::Completion).await
}

async fn chat_completions(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let req: ChatRequest = parse_body(&body)?;
    // A blank line ends the assistant's turn in the World chat format.
    let settings = req.common.settings(
        &app.model_name,
        DEFAULT_CHAT_TOKENS,
        &["\n\n"],
        fallback_seed(&app),
    )?;
    let text = chat_prompt(&req.messages)?;
    let prompt = app.vocab.encode(text.as_bytes());
    run(app, settings, prompt, Kind::Chat).await
}

/// A request without a seed gets a different one each time (OpenAI's behaviour).
fn fallback_seed(app: &AppState) -> u64 {
    let n = app.next_id.load(Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Response metadata shared by every chunk of one answer.
#[derive(Clone)]
struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

async fn run(
    app: Arc<AppState>,
    settings: Settings,
    prompt: Vec<u32>,
    kind: Kind,
) -> Result<Response, ApiError> {
    check_logit_bias(&settings, app.vocab_size)?;
    let param = if kind == Kind::Chat {
        "messages"
    } else {
        "prompt"
    };
    if prompt.len() > app.max_prompt_tokens {
        return Err(ApiError::bad_request(
            format!(
                "the prompt has {} tokens; this server takes at most {}",
                prompt.len(),
                app.max_prompt_tokens
            ),
            Some(param),
        )
        .with_code("context_length_exceeded"));
    }
    let initial_state = match &settings.state {
        None => None,
        Some(name) => Some(Arc::clone(app.states.get(name).ok_or_else(|| {
            let mut known: Vec<&str> = app.states.keys().map(String::as_str).collect();
            known.sort_unstable();
            ApiError::bad_request(
                format!("unknown state '{name}'; loaded: [{}]", known.join(", ")),
                Some("state"),
            )
        })?)),
    };
    let stop = StopMatcher::new(&settings.stops)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let job = Job {
        prompt,
        initial_state,
        params: settings.params,
        logit_bias: settings.logit_bias.clone(),
        stop,
        max_tokens: settings.max_tokens,
        trim_leading_space: kind == Kind::Chat,
        ignore_eos: settings.ignore_eos,
        events: tx,
    };
    app.scheduler.submit(job).map_err(|_| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the server is busy: its request queue is full; retry shortly".into(),
        kind: "server_error",
        param: None,
        code: Some("queue_full"),
    })?;
    let n = app.next_id.fetch_add(1, Ordering::Relaxed);
    let meta = Meta {
        id: match kind {
            Kind::Completion => format!("cmpl-{:x}{n:08x}", app.started),
            Kind::Chat => format!("chatcmpl-{:x}{n:08x}", app.started),
        },
        created: unix_now(),
        model: app.model_name.clone(),
        kind,
    };
    if settings.stream {
        Ok(stream_answer(rx, meta, settings.include_usage).into_response())
    } else {
        whole_answer(rx, meta).await
    }
}

fn internal(message: String) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message,
        kind: "server_error",
        param: None,
        code: None,
    }
}

async fn whole_answer(
    mut rx: mpsc::UnboundedReceiver<Event>,
    meta: Meta,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done {
                finish_reason,
                usage,
            }) => {
                let choice = match meta.kind {
                    Kind::Completion => json!({
                        "index": 0, "text": text, "logprobs": null,
                        "finish_reason": finish_reason.as_str(),
                    }),
                    Kind::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": finish_reason.as_str(),
                    }),
                };
                let object = match meta.kind {
                    Kind::Completion => "text_completion",
                    Kind::Chat => "chat.completion",
                };
                return Ok(Json(json!({
                    "id": meta.id,
                    "object": object,
                    "created": meta.created,
                    "model": meta.model,
                    "choices": [choice],
                    "usage": usage_json(&usage),
                }))
                .into_response());
            }
            Some(Event::Failed(m)) => return Err(internal(format!("generation failed: {m}"))),
            None => return Err(internal("the scheduler stopped".into())),
        }
    }
}

fn chunk(meta: &Meta, text: Option<&str>, finish: Option<&str>, role: bool) -> Value {
    match meta.kind {
        Kind::Completion => json!({
            "id": meta.id, "object": "text_completion", "created": meta.created,
            "model": meta.model,
            "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": null,
                         "finish_reason": finish}],
        }),
        Kind::Chat => {
            let mut delta = serde_json::Map::new();
            if role {
                delta.insert("role".into(), json!("assistant"));
            }
            if let Some(t) = text {
                delta.insert("content".into(), json!(t));
            }
            json!({
                "id": meta.id, "object": "chat.completion.chunk", "created": meta.created,
                "model": meta.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null,
                             "finish_reason": finish}],
            })
        }
    }
}

struct StreamState {
    rx: mpsc::UnboundedReceiver<Event>,
    queue: VecDeque<SseEvent>,
    meta: Meta,
    include_usage: bool,
    finished: bool,
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// Server-sent events: one chunk per text piece, a last chunk with the finish reason, the usage
/// chunk when asked for, then `data: [DONE]`. Dropping the stream (client gone) drops the
/// receiver, which the scheduler sees as a cancellation.
fn stream_answer(
    rx: mpsc::UnboundedReceiver<Event>,
    meta: Meta,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let mut queue = VecDeque::new();
    if meta.kind == Kind::Chat {
        queue.push_back(data(&chunk(&meta, Some(""), None, true)));
    }
    let state = StreamState {
        rx,
        queue,
        meta,
        include_usage,
        finished: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.queue.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.finished {
                return None;
            }
            match st.rx.recv().await {
                Some(Event::Text(t)) => {
                    let c = chunk(&st.meta, Some(&t), None, false);
                    st.queue.push_back(data(&c));
                }
                Some(Event::Done {
                    finish_reason,
                    usage,
                }) => {
                    let text = (st.meta.kind == Kind::Completion).then_some("");
                    let c = chunk(&st.meta, text, Some(finish_reason.as_str()), false);
                    st.queue.push_back(data(&c));
                    if st.include_usage {
                        let object = match st.meta.kind {
                            Kind::Completion => "text_completion",
                            Kind::Chat => "chat.completion.chunk",
                        };
                        st.queue.push_back(data(&json!({
                            "id": st.meta.id, "object": object, "created": st.meta.created,
                            "model": st.meta.model, "choices": [], "usage": usage_json(&usage),
                        })));
                    }
                    st.queue.push_back(SseEvent::default().data("[DONE]"));
                    st.finished = true;
                }
                Some(Event::Failed(m)) => {
                    let e = internal(format!("generation failed: {m}"));
                    st.queue.push_back(data(&e.body()));
                    st.queue.push_back(SseEvent::default().data("[DONE]"));
                    st.finished = true;
                }
                None => {
                    let e = internal("the scheduler stopped".into());
                    st.queue.push_back(data(&e.body()));
                    st.finished = true;
                }
            }
        }
    });
    // Comment lines while a request waits in the queue or prefills keep proxies from timing
    // the stream out, and a write to a client that left ends the stream sooner.
    Sse::new(stream).keep_alive(KeepAlive::default())
}
