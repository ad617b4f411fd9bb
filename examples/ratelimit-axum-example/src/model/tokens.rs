//! The token estimator the gateway reserves with.

use crate::ChatMessage;

/// The tokens of `text` as the gateway estimates them: its UTF-8 bytes
/// divided by four, rounded up.
///
/// Four bytes per token is the usual rule of thumb for English text with
/// the GPT tokenizers; it overestimates for plain English and can
/// underestimate for other scripts and for code. The gateway only needs an
/// estimate to reserve before the call: it settles with the model's own
/// count afterwards.
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::model::estimate_tokens;
/// assert_eq!(estimate_tokens(""), 0);
/// assert_eq!(estimate_tokens("Hi"), 1);
/// assert_eq!(estimate_tokens("Why is the sky blue?"), 5);
/// ```
#[must_use]
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// The prompt's tokens: the sum of [`estimate_tokens`] over the messages'
/// text (roles and framing are not counted).
///
/// # Examples
///
/// ```
/// use ratelimit_axum_example::{ChatMessage, Role};
/// use ratelimit_axum_example::model::estimate_prompt_tokens;
///
/// let messages = vec![
///     ChatMessage { role: Role::System, content: "Be brief.".into() },
///     ChatMessage { role: Role::User, content: "Why is the sky blue?".into() },
/// ];
/// assert_eq!(estimate_prompt_tokens(&messages), 3 + 5);
/// ```
#[must_use]
pub fn estimate_prompt_tokens(messages: &[ChatMessage]) -> u64 {
    messages.iter().map(|m| estimate_tokens(&m.content)).sum()
}
