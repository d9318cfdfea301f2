//! Counting a reply's tokens on this server, for when the provider reports none: a reply
//! cancelled or cut short by a timeout or an error before the provider's closing usage chunk,
//! or a provider that does not count streamed replies. The prompt was sent and part of the
//! answer generated, so the spending is recorded, marked as an estimate.
//!
//! Known OpenAI models are counted with their own encoding (`o200k_base` for GPT-4o, GPT-4.1,
//! GPT-5 and the `o` series, `cl100k_base` for GPT-4 and GPT-3.5, as tiktoken maps model names),
//! plus the chat format's overhead as OpenAI's cookbook counts it ("How to count tokens with
//! tiktoken": 3 tokens per message, 3 more priming the reply). Other models are approximated at
//! one token per 4 characters, OpenAI's rule of thumb for English text.

use tiktoken_rs::{tokenizer, CoreBPE};

use super::provider::ChatMessage;
use crate::store::ai::Tokens;

/// Tokens each message of a chat-completions request adds beyond its role and content.
const PER_MESSAGE: i64 = 3;
/// Tokens that prime every reply (`<|start|>assistant<|message|>`).
pub const REPLY_PRIMING: i64 = 3;

/// The context window of `model` in tokens, as its provider documents it, for well-known names;
/// 8,192 for any other (a conservative size that current local models all exceed; set
/// `MRM_AI_CONTEXT_WINDOW` for yours). Matched by prefix, most specific first.
pub fn context_window(model: &str) -> u32 {
    const KNOWN: [(&str, u32); 13] = [
        ("gpt-4.1", 1_047_576),
        ("gpt-4o", 128_000),
        ("gpt-4-turbo", 128_000),
        ("gpt-4-32k", 32_768),
        ("gpt-4", 8_192),
        ("gpt-3.5-turbo", 16_385),
        ("gpt-5", 400_000),
        ("o1-mini", 128_000),
        ("o1", 200_000),
        ("o3", 200_000),
        ("o4-mini", 200_000),
        ("chatgpt-4o", 128_000),
        ("gpt-oss", 131_072),
    ];
    let model = model.to_ascii_lowercase();
    KNOWN
        .iter()
        .find(|(prefix, _)| model.starts_with(prefix))
        .map_or(8_192, |(_, window)| *window)
}
/// Characters per token assumed for a model whose encoding is not known.
const CHARS_PER_TOKEN: u64 = 4;

/// How one model's text is counted: with the model's own encoding when tiktoken knows the
/// model, else at one token per 4 characters.
pub enum Counter {
    Encoding(&'static CoreBPE),
    Approximate,
}

impl Counter {
    /// The counter of `model` (the first use of an encoding loads it: call off the runtime).
    pub fn for_model(model: &str) -> Self {
        match tokenizer::get_tokenizer(model) {
            Some(tokenizer) => match tiktoken_rs::bpe_for_tokenizer(tokenizer) {
                Ok(bpe) => Counter::Encoding(bpe),
                Err(_) => Counter::Approximate,
            },
            None => Counter::Approximate,
        }
    }

    /// Tokens of one message of a chat-completions request: its role and content, plus the
    /// format's overhead per message.
    pub fn message(&self, message: &ChatMessage) -> i64 {
        PER_MESSAGE + self.count(&message.role) + self.count(&message.content)
    }

    /// Tokens of `text`.
    pub fn count(&self, text: &str) -> i64 {
        match self {
            Counter::Encoding(bpe) => bpe.encode_ordinary(text).len() as i64,
            Counter::Approximate => (text.chars().count() as u64).div_ceil(CHARS_PER_TOKEN) as i64,
        }
    }
}

/// Estimates what a reply cost: the `prompt` as sent to `model`, and the `completion` text
/// received. The result is marked `estimated`. CPU-bound (the first use of an encoding also
/// loads it, a few megabytes): call it off the async runtime's threads.
pub fn estimate(model: &str, prompt: &[ChatMessage], completion: &str) -> Tokens {
    let counter = Counter::for_model(model);
    let prompt_tokens = prompt.iter().map(|m| counter.message(m)).sum::<i64>() + REPLY_PRIMING;
    let completion_tokens = counter.count(completion);
    Tokens {
        prompt: prompt_tokens,
        completion: completion_tokens,
        total: prompt_tokens + completion_tokens,
        estimated: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_models_use_their_encoding() {
        let prompt = [
            ChatMessage::new("system", "You are a helpful assistant."),
            ChatMessage::new("user", "hello world"),
        ];
        // Counted as OpenAI's cookbook counts them: 6 + 1 for the system message's content and
        // role, 2 + 1 for the user's, 3 per message, 3 priming the reply.
        for model in ["gpt-4o", "gpt-4o-mini-2024-07-18", "gpt-4", "gpt-3.5-turbo"] {
            let tokens = estimate(model, &prompt, "hello world");
            assert_eq!(tokens.prompt, 19, "{model}");
            assert_eq!(tokens.completion, 2, "{model}");
            assert_eq!(tokens.total, 21, "{model}");
            assert!(tokens.estimated);
        }
    }

    #[test]
    fn the_two_encodings_differ_where_they_should() {
        // A word o200k_base has as one token and cl100k_base splits.
        let text = "Привет, как дела?";
        let o200k = estimate("gpt-4o", &[], text).completion;
        let cl100k = estimate("gpt-4", &[], text).completion;
        assert!(o200k < cl100k, "o200k {o200k}, cl100k {cl100k}");
    }

    #[test]
    fn windows_of_known_models_and_a_safe_default() {
        assert_eq!(context_window("gpt-4o-mini"), 128_000);
        assert_eq!(context_window("gpt-4.1-nano"), 1_047_576);
        assert_eq!(context_window("gpt-4"), 8_192);
        assert_eq!(context_window("gpt-4-turbo-2024-04-09"), 128_000);
        assert_eq!(context_window("o1-mini"), 128_000);
        assert_eq!(context_window("llama3.2"), 8_192);
    }

    #[test]
    fn unknown_models_are_approximated_by_length() {
        let prompt = [ChatMessage::new("user", "abcdefgh")];
        let tokens = estimate("llama-3-70b", &prompt, "abcde");
        // 3 + ceil(4/4) for "user" + ceil(8/4) for the content, 3 priming.
        assert_eq!(tokens.prompt, 3 + 1 + 2 + 3);
        assert_eq!(tokens.completion, 2);
        assert!(tokens.estimated);
        assert_eq!(estimate("local", &[], "").completion, 0);
    }
}
