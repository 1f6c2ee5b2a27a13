//! OpenAI-compatible wire types: request bodies (serde), their validation into scheduler jobs,
//! the RWKV World chat template, response and error objects.

use std::collections::HashMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rwkv_core::sampler::{validate_logit_bias, InvalidParam, SamplerParams};
use serde::Deserialize;
use serde_json::{json, Value};

use super::scheduler::Usage;

/// Most tokens one request may generate (a stated cap so one request cannot hold a slot for
/// ever; OpenAI's largest models allow about this many).
pub const MAX_TOKENS_CAP: usize = 32768;
/// `max_tokens` of a completion request that gives none (OpenAI's default).
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;
/// `max_tokens` of a chat request that gives none: chats end at the blank line long before.
pub const DEFAULT_CHAT_TOKENS: usize = 1024;
/// Messages in one chat request; more is not a chat but an attack on the template builder.
pub const MAX_MESSAGES: usize = 4096;

/// An OpenAI-style error answer: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<InvalidParam> for ApiError {
    fn from(e: InvalidParam) -> ApiError {
        ApiError::bad_request(e.to_string(), Some(e.param))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // The queue drains in about a step per token; a second is a fair wait.
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// `prompt`: a string, one string in an array, or token ids.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
}

/// `stop`: one string or up to four.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// Fields shared by both endpoints. Unknown fields are ignored, as OpenAI's clients send
/// optional ones (user, metadata) freely; known fields with values we cannot honour are refused.
#[derive(Deserialize, Debug, Default)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// RWKV's occurrence decay per token (not in OpenAI's API; ChatRWKV/Ai00 name).
    pub penalty_decay: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<StopField>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u64>,
    pub best_of: Option<u64>,
    pub echo: Option<bool>,
    pub logprobs: Option<Value>,
    pub tools: Option<Vec<Value>>,
    /// A `--state NAME` to start from (not in OpenAI's API; pass it with `extra_body`).
    pub state: Option<String>,
    /// Generate through the end-of-text token (vLLM's name; for load tests).
    pub ignore_eos: Option<bool>,
}

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub prompt: Option<PromptField>,
    pub suffix: Option<String>,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// Parses a JSON body; the error names what serde found wrong (wrong type, bad syntax).
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}"), None))
}

/// The settings of one request, validated.
pub struct Settings {
    pub params: SamplerParams,
    pub logit_bias: Vec<(u32, f32)>,
    pub stops: Vec<String>,
    pub max_tokens: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub state: Option<String>,
    pub ignore_eos: bool,
}

impl CommonParams {
    /// Validates every field against `vocab_size` and the served model's name.
    pub fn settings(
        &self,
        model_name: &str,
        default_max_tokens: usize,
        default_stops: &[&str],
        fallback_seed: u64,
    ) -> Result<Settings, ApiError> {
        if let Some(m) = &self.model {
            if m != model_name {
                return Err(ApiError::bad_request(
                    format!("model '{m}' is not served here; this server has '{model_name}'"),
                    Some("model"),
                )
                .with_code("model_not_found"));
            }
        }
        let one = |v: Option<u64>, param: &str| -> Result<(), ApiError> {
            match v {
                None | Some(1) => Ok(()),
                Some(k) => Err(ApiError::bad_request(
                    format!("{param} = {k} is not supported; only 1"),
                    Some(param),
                )),
            }
        };
        one(self.n, "n")?;
        one(self.best_of, "best_of")?;
        if self.echo == Some(true) {
            return Err(ApiError::bad_request("echo is not supported", Some("echo")));
        }
        if self
            .logprobs
            .as_ref()
            .is_some_and(|v| !(v.is_null() || v == &Value::Bool(false)))
        {
            return Err(ApiError::bad_request(
                "logprobs are not supported",
                Some("logprobs"),
            ));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::bad_request(
                "tools are not supported",
                Some("tools"),
            ));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => default_max_tokens,
            Some(n) if n >= 1 && n <= MAX_TOKENS_CAP as u64 => n as usize,
            Some(n) => {
                return Err(ApiError::bad_request(
                    format!("max_tokens = {n} is outside the allowed range [1, {MAX_TOKENS_CAP}]"),
                    Some("max_tokens"),
                ))
            }
        };
        let defaults = SamplerParams::default();
        let params = SamplerParams {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            // Larger than any vocabulary means "no limit", the same as 0.
            top_k: self.top_k.map_or(0, |k| usize::try_from(k).unwrap_or(0)),
            // OpenAI's seed is a signed integer; its bits are the seed.
            seed: self.seed.map_or(fallback_seed, |s| s as u64),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            penalty_decay: self.penalty_decay.unwrap_or(defaults.penalty_decay),
        };
        params.validate()?;
        let stops = match &self.stop {
            None => default_stops.iter().map(|s| s.to_string()).collect(),
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
        };
        let mut logit_bias = Vec::new();
        if let Some(map) = &self.logit_bias {
            for (k, &v) in map {
                let id: u32 = k.parse().map_err(|_| {
                    ApiError::bad_request(
                        format!("logit_bias key '{k}' is not a token id"),
                        Some("logit_bias"),
                    )
                })?;
                logit_bias.push((id, v));
            }
            // HashMap order is random; a fixed order keeps a seeded run repeatable.
            logit_bias.sort_by_key(|&(id, _)| id);
        }
        Ok(Settings {
            params,
            logit_bias,
            stops,
            max_tokens,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            state: self.state.clone(),
            ignore_eos: self.ignore_eos.unwrap_or(false),
        })
    }
}

/// Checks the bias table against the vocabulary (needs the model, so separate from `settings`).
pub fn check_logit_bias(s: &Settings, vocab_size: usize) -> Result<(), ApiError> {
    validate_logit_bias(&s.logit_bias, vocab_size).map_err(ApiError::from)
}

/// The RWKV World / G1 chat prompt: `System: ...`, `User: ...`, `Assistant: ...` turns joined
/// by blank lines, ending with `Assistant:` for the model to continue. A blank line inside a
/// message would read as the end of its turn, so runs of newlines become one (as ChatRWKV does).
pub fn chat_prompt(messages: &[Message]) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    if messages.len() > MAX_MESSAGES {
        return Err(ApiError::bad_request(
            format!("{} messages; at most {MAX_MESSAGES}", messages.len()),
            Some("messages"),
        ));
    }
    let mut out = String::new();
    for m in messages {
        let speaker = match m.role.as_str() {
            "system" | "developer" => "System",
            "user" => "User",
            "assistant" => "Assistant",
            other => {
                return Err(ApiError::bad_request(
                    format!("unknown role '{other}' (system, developer, user or assistant)"),
                    Some("messages"),
                ))
            }
        };
        let text = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut t = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(s)) => t.push_str(s),
                        (kind, _) => {
                            return Err(ApiError::bad_request(
                                format!(
                                    "content part of type '{kind}' is not supported (text only)"
                                ),
                                Some("messages"),
                            ))
                        }
                    }
                }
                t
            }
        };
        let text = normalize_turn(&text);
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(speaker);
        out.push(':');
        if !text.is_empty() {
            out.push(' ');
            out.push_str(&text);
        }
    }
    out.push_str("\n\nAssistant:");
    Ok(out)
}

fn normalize_turn(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len());
    let mut prev_newline = false;
    for c in text.trim().chars() {
        if c == '\n' && prev_newline {
            continue;
        }
        prev_newline = c == '\n';
        out.push(c);
    }
    out
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, text: &str) -> Message {
        Message {
            role: role.into(),
            content: Some(Content::Text(text.into())),
        }
    }

    #[test]
    fn chat_template_is_rwkv_world() {
        let p = chat_prompt(&[
            msg("system", "Be brief."),
            msg("user", "Hi\n\n\nthere "),
            msg("assistant", "Hello."),
            msg("user", "Bye"),
        ])
        .unwrap();
        assert_eq!(
            p,
            "System: Be brief.\n\nUser: Hi\nthere\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant:"
        );
        assert!(chat_prompt(&[msg("robot", "x")]).is_err());
        assert!(chat_prompt(&[]).is_err());
    }

    #[test]
    fn settings_validate_and_name_the_parameter() {
        let p: CommonParams =
            serde_json::from_str(r#"{"temperature": 3.0, "model": "m"}"#).unwrap();
        let e = p.settings("m", 16, &[], 1).err().unwrap();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let p: CommonParams = serde_json::from_str(r#"{"model": "other"}"#).unwrap();
        assert_eq!(
            p.settings("m", 16, &[], 1).err().unwrap().code,
            Some("model_not_found")
        );
        let p: CommonParams = serde_json::from_str(r#"{"max_tokens": 0}"#).unwrap();
        assert!(p.settings("m", 16, &[], 1).is_err());
        let p: CommonParams =
            serde_json::from_str(r#"{"logit_bias": {"5": 2.5, "x": 1}}"#).unwrap();
        assert!(p.settings("m", 16, &[], 1).is_err());
        let p: CommonParams =
            serde_json::from_str(r#"{"stop": "\n\n", "seed": -3, "top_k": 7}"#).unwrap();
        let s = p.settings("m", 16, &["x"], 1).unwrap();
        assert_eq!(s.stops, vec!["\n\n".to_string()]);
        assert_eq!((s.params.seed, s.params.top_k), ((-3i64) as u64, 7));
        assert!(serde_json::from_str::<CommonParams>(r#"{"temperature": "hot"}"#).is_err());
    }
}
