//! The request body: the ai SDK v5 `useChat` form and the plain form.

use serde::Deserialize;
use serde_json::Value;

use crate::AppError;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The person chatting.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name in the OpenAI chat-completions API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One message of the conversation, reduced to its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Its text (the text parts joined, for the ai SDK form).
    pub content: String,
}

#[derive(Deserialize)]
struct Body {
    messages: Option<Vec<Message>>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    parts: Option<Vec<Value>>,
}

/// Reads a chat request: `{ messages: [{ role, content }] }`, or the body
/// `useChat`/`DefaultChatTransport` sends,
/// `{ id, messages: [{ id, role, parts: [{ type: "text", text }] }], trigger }`
/// (parts of other types are ignored, as are unknown fields).
///
/// # Errors
///
/// [`AppError::BadRequest`] with a short reason when the JSON is malformed,
/// `messages` is missing or empty, or a message has an unknown role or no
/// text at all.
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::{parse_chat_request, Role};
///
/// let plain = parse_chat_request(br#"{"messages":[{"role":"user","content":"Hi"}]}"#).unwrap();
/// let sdk = parse_chat_request(br#"{"id":"c1","trigger":"submit-message","messages":[
///     {"id":"m1","role":"user","parts":[{"type":"step-start"},{"type":"text","text":"Hi"}]}]}"#).unwrap();
/// assert_eq!(plain, sdk);
/// assert_eq!(plain[0].role, Role::User);
/// assert!(parse_chat_request(b"{").is_err());
/// ```
pub fn parse_chat_request(bytes: &[u8]) -> Result<Vec<ChatMessage>, AppError> {
    let body: Body = serde_json::from_slice(bytes)
        .map_err(|e| AppError::BadRequest(format!("Malformed JSON body: {e}.")))?;
    let messages = body
        .messages
        .ok_or_else(|| AppError::BadRequest("The body has no `messages` array.".into()))?;
    if messages.is_empty() {
        return Err(AppError::BadRequest("`messages` is empty.".into()));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(index: usize, m: Message) -> Result<ChatMessage, AppError> {
    let role = match m.role.as_str() {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(AppError::BadRequest(format!(
                "messages[{index}] has an unknown role {other:?}."
            )))
        }
    };
    let content = match (m.content, m.parts) {
        (Some(Value::String(text)), _) => text,
        // The OpenAI form: content as an array of typed parts.
        (Some(Value::Array(parts)), _) | (None, Some(parts)) => text_of(&parts),
        _ => {
            return Err(AppError::BadRequest(format!(
                "messages[{index}] has neither `content` text nor `parts`."
            )))
        }
    };
    Ok(ChatMessage { role, content })
}

/// The text parts joined; parts of other types (files, tools, reasoning,
/// step markers) carry nothing a text model reads.
fn text_of(parts: &[Value]) -> String {
    parts
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("")
}
