//! Titles written for AI chats created without one: after the first exchange, the model is
//! asked for a short title (`MRM_AI_TITLES`, on by default). The request is counted in the
//! user's usage like any other, so it spends their budget.

use futures_util::StreamExt;

use super::{
    models::Route,
    provider::{ChatMessage, StreamEvent},
};
use crate::{
    domain::AiRole,
    store::{self, ai::Tokens, Db},
};

/// The title of an AI chat created without one.
pub const DEFAULT_TITLE: &str = "New conversation";
/// Longest title kept, in characters.
const MAX_CHARS: usize = 60;
/// The longest a title may take to write.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

const INSTRUCTION: &str = "Write a title of at most six words for the conversation below. \
                           Answer with the title alone: no quotes, no final full stop.";

/// A title from a model's answer: the first line, without quotes or a final full stop, at most
/// 60 characters (cut at a word); `None` when nothing is left.
pub fn clean(answer: &str) -> Option<String> {
    let line = answer.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = line
        .trim_matches(|c: char| matches!(c, '"' | '\'' | '“' | '”' | '«' | '»' | '*' | '#'))
        .trim()
        .trim_end_matches('.')
        .trim();
    if line.is_empty() {
        return None;
    }
    if line.chars().count() <= MAX_CHARS {
        return Some(line.to_owned());
    }
    let cut: String = line.chars().take(MAX_CHARS).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    Some(cut.trim_end().to_owned())
}

/// Writes a title for AI chat `ai_chat_id` of user `user_id`, if it still has the default
/// title and has just had its first exchange (`question`, `answer`). Failures are logged: a chat
/// keeps its default title.
pub async fn write(
    db: &Db,
    route: &Route,
    user_id: i64,
    ai_chat_id: i64,
    question: &str,
    answer: &str,
) {
    let prompt = vec![
        ChatMessage::new(AiRole::System.as_str(), INSTRUCTION),
        ChatMessage::new(
            AiRole::User.as_str(),
            format!("User: {question}\n\nAssistant: {answer}"),
        ),
    ];
    let asked = tokio::time::timeout(DEADLINE, ask(route, prompt.clone())).await;
    let (text, reported) = match asked {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => {
            tracing::warn!(ai_chat.id = ai_chat_id, error = %err, "could not write a title");
            return;
        }
        Err(_) => {
            tracing::warn!(ai_chat.id = ai_chat_id, "writing a title took too long");
            return;
        }
    };
    let model = route.model.clone();
    let tokens = match reported {
        Some(tokens) => tokens,
        None => {
            let counted = text.clone();
            tokio::task::spawn_blocking(move || super::tokens::estimate(&model, &prompt, &counted))
                .await
                .unwrap_or_default()
        }
    };
    if let Err(err) = store::ai::record_usage(db, user_id, &route.model, tokens).await {
        tracing::error!(error = %err, "could not record token usage");
    }
    let Some(title) = clean(&text) else {
        return;
    };
    if let Err(err) = store::ai::retitle(db, ai_chat_id, DEFAULT_TITLE, &title).await {
        tracing::error!(error = %err, "could not save a title");
    }
}

async fn ask(
    route: &Route,
    prompt: Vec<ChatMessage>,
) -> Result<(String, Option<Tokens>), super::provider::ProviderError> {
    let mut stream = route.provider.stream(&route.model, prompt).await?;
    let mut text = String::new();
    let mut tokens = None;
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Delta(delta) => text.push_str(&delta),
            StreamEvent::Usage(reported) => tokens = Some(reported),
            StreamEvent::Finish(_) => {}
        }
    }
    Ok((text, tokens))
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn answers_become_titles() {
        assert_eq!(
            clean("\"Planning a trip to Rome.\"").as_deref(),
            Some("Planning a trip to Rome")
        );
        assert_eq!(
            clean("\n  Rust lifetimes  \nmore").as_deref(),
            Some("Rust lifetimes")
        );
        assert_eq!(clean("  \"\" "), None);
        let long = "word ".repeat(30);
        let cut = clean(&long).unwrap();
        assert!(cut.chars().count() <= 60 && cut.ends_with("word"), "{cut}");
    }
}
