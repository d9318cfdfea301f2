//! What the model is sent: the chat's system prompt (with context from the related group chat
//! when asked for and still allowed), then as much of the conversation as fits the model's
//! context window, the new message last.

use super::{
    provider::ChatMessage,
    tokens::{Counter, REPLY_PRIMING},
};
use crate::{
    domain::AiRole,
    store::{ai::AiMessage, messages::Message},
};

/// Share of the prompt's budget the related chat's context may take: a quarter, so the
/// conversation itself keeps most of the window.
const CONTEXT_SHARE: i64 = 4;

/// The token budget of one request: the model's context window less what is kept for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The model's context window, in tokens.
    pub window: u32,
    /// Tokens kept free for the reply.
    pub reserve: u32,
}

impl Budget {
    /// Tokens the prompt may take, the reply's priming included.
    pub fn prompt_tokens(&self) -> i64 {
        i64::from(self.window.saturating_sub(self.reserve)) - REPLY_PRIMING
    }
}

/// A prompt that fits, and what was left out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub messages: Vec<ChatMessage>,
    /// Earlier messages of the conversation left out, oldest first, to fit.
    pub omitted_messages: i64,
    /// Messages of the related chat's context left out, oldest first, to fit its share.
    pub omitted_context: i64,
    /// Tokens of the prompt as counted here.
    pub tokens: i64,
}

/// Why no prompt fits: the system prompt and the newest message alone take `needed` tokens,
/// more than the `limit` the window leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the message does not fit the model's context window ({needed} tokens; at most {limit})")]
pub struct TooLong {
    pub needed: i64,
    pub limit: i64,
}

/// The system message: the prompt, plus one `username: content` line per context message.
pub fn system_message(system_prompt: &str, context: &[Message]) -> ChatMessage {
    let mut text = system_prompt.to_owned();
    if !context.is_empty() {
        text.push_str("\n\nContext from related chat:\n");
        for message in context {
            text.push_str(&message.sender_username);
            text.push_str(": ");
            text.push_str(&message.content);
            text.push('\n');
        }
    }
    ChatMessage::new(AiRole::System.as_str(), text)
}

/// Checks that the system prompt and a new question alone fit `budget`, before anything is
/// stored or sent. Errors: [`TooLong`].
pub fn check_question(
    counter: &Counter,
    budget: Budget,
    system_prompt: &str,
    question: &str,
) -> Result<(), TooLong> {
    let needed = counter.message(&system_message(system_prompt, &[]))
        + counter.message(&ChatMessage::new(AiRole::User.as_str(), question));
    let limit = budget.prompt_tokens();
    if needed > limit {
        return Err(TooLong { needed, limit });
    }
    Ok(())
}

/// The messages of one request, fitted to `budget` as counted by `counter`:
/// - the system message, with the related chat's `context` (oldest first) trimmed from its oldest
///   end to a quarter of the budget;
/// - then the newest `user` and `assistant` messages of `history` (oldest first; the new question,
///   already stored, is its last) that fit what is left, oldest first; an older message is left
///   out entirely, never cut, and everything older than it too, so the model reads an unbroken
///   end of the conversation.
///
/// The related chat's lines give way to the newest message: it always fits when
/// [`check_question`] passed.
///
/// Errors: [`TooLong`] when the system prompt and the newest message alone do not fit.
pub fn fit(
    counter: &Counter,
    budget: Budget,
    system_prompt: &str,
    context: &[Message],
    history: &[AiMessage],
) -> Result<Fitted, TooLong> {
    let limit = budget.prompt_tokens();
    let bare = counter.message(&system_message(system_prompt, &[]));
    let turns: Vec<&AiMessage> = history
        .iter()
        .filter(|m| matches!(m.role, AiRole::User | AiRole::Assistant))
        .collect();
    // The newest message must fit with the bare system prompt, whatever else is left out.
    let newest = turns
        .last()
        .map(|m| counter.message(&ChatMessage::new(m.role.as_str(), m.content.clone())))
        .unwrap_or(0);
    if bare + newest > limit {
        return Err(TooLong {
            needed: bare + newest,
            limit,
        });
    }
    // Context lines, newest first, while they fit their share (and leave room for the newest
    // message; the header they come under counts too).
    let header = counter.count("\n\nContext from related chat:\n");
    let share = (limit / CONTEXT_SHARE).min(limit - bare - newest - header);
    let mut kept_context = 0;
    let mut context_tokens = 0;
    for message in context.iter().rev() {
        let line = counter.count(&format!(
            "{}: {}\n",
            message.sender_username, message.content
        ));
        if context_tokens + line > share {
            break;
        }
        context_tokens += line;
        kept_context += 1;
    }
    let mut omitted_context = (context.len() - kept_context) as i64;
    let mut system = system_message(system_prompt, &context[context.len() - kept_context..]);
    let mut used = counter.message(&system);
    // Counted whole, the lines may come to a token or two more than one by one: the newest
    // message wins, and the context goes.
    if used + newest > limit {
        omitted_context = context.len() as i64;
        system = system_message(system_prompt, &[]);
        used = bare;
    }

    let mut kept: Vec<ChatMessage> = Vec::new();
    for message in turns.iter().rev() {
        let chat = ChatMessage::new(message.role.as_str(), message.content.clone());
        let tokens = counter.message(&chat);
        if used + tokens > limit && !kept.is_empty() {
            break;
        }
        used += tokens;
        kept.push(chat);
    }
    let omitted_messages = (turns.len() - kept.len()) as i64;
    let mut messages = Vec::with_capacity(kept.len() + 1);
    messages.push(system);
    messages.extend(kept.into_iter().rev());
    Ok(Fitted {
        messages,
        omitted_messages,
        omitted_context,
        tokens: used + REPLY_PRIMING,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(id: i64, role: AiRole, content: &str) -> AiMessage {
        AiMessage {
            id,
            ai_chat_id: 1,
            role,
            content: content.to_owned(),
            created_at: chrono::Utc::now(),
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            usage_estimated: false,
            model: None,
            finish_reason: None,
            omitted_messages: None,
            parent_id: (id > 1).then_some(id - 1),
            active: true,
        }
    }

    /// 200 turns of 40 characters (10 tokens each, plus 3 + 1 or 3 + 3 for the role).
    fn conversation() -> Vec<AiMessage> {
        (0..400)
            .map(|i| {
                let role = if i % 2 == 0 {
                    AiRole::User
                } else {
                    AiRole::Assistant
                };
                turn(i, role, &format!("{:0>40}", i))
            })
            .collect()
    }

    #[test]
    fn the_newest_turns_that_fit_are_sent_and_the_rest_counted() {
        let counter = Counter::Approximate;
        let budget = Budget {
            window: 600,
            reserve: 100,
        };
        let history = conversation();
        let fitted = fit(&counter, budget, "Be brief.", &[], &history).unwrap();
        assert!(fitted.tokens <= 500, "{}", fitted.tokens);
        let sent = fitted.messages.len() as i64 - 1;
        assert_eq!(sent + fitted.omitted_messages, 400);
        assert!(fitted.omitted_messages > 300, "{}", fitted.omitted_messages);
        // An unbroken end of the conversation, the newest last.
        assert_eq!(
            fitted.messages.last().unwrap().content,
            format!("{:0>40}", 399)
        );
        let first_sent = 400 - sent;
        assert_eq!(fitted.messages[1].content, format!("{:0>40}", first_sent));
        // The count here is what the whole prompt costs.
        let recount: i64 = fitted
            .messages
            .iter()
            .map(|m| counter.message(m))
            .sum::<i64>()
            + REPLY_PRIMING;
        assert_eq!(recount, fitted.tokens);
    }

    fn context_line(id: i64, content: &str) -> Message {
        Message {
            id,
            chat_id: 1,
            seq: id,
            content: content.to_owned(),
            created_at: chrono::Utc::now(),
            sender_id: 1,
            sender_username: "bob".into(),
            sender_email: String::new(),
            sender_user_type: crate::domain::UserType::Student,
            edited_at: None,
            deleted_at: None,
            reply_to_id: None,
            reply_sender_id: None,
            reply_sender_username: None,
            reply_excerpt: None,
            reply_deleted: false,
            mentions: None,
            attachments: None,
        }
    }

    #[test]
    fn the_related_chats_context_keeps_its_newest_lines_within_a_quarter() {
        let counter = Counter::Approximate;
        let budget = Budget {
            window: 1_000,
            reserve: 200,
        };
        // 100 lines of about 12 tokens: far more than a quarter of 797.
        let context: Vec<Message> = (0..100)
            .map(|i| context_line(i, &format!("context line {i:03} padded out")))
            .collect();
        let history = [turn(1, AiRole::User, "what did bob say?")];
        let fitted = fit(&counter, budget, "Be brief.", &context, &history).unwrap();
        let system = &fitted.messages[0].content;
        assert!(
            system.contains("context line 099"),
            "the newest line is kept"
        );
        assert!(
            !system.contains("context line 000"),
            "the oldest is left out"
        );
        assert!(fitted.omitted_context > 50, "{}", fitted.omitted_context);
        let context_tokens = counter.message(&fitted.messages[0])
            - counter.message(&system_message("Be brief.", &[]));
        assert!(
            context_tokens <= budget.prompt_tokens() / 4 + 10,
            "{context_tokens}"
        );
        assert_eq!(fitted.omitted_messages, 0);
    }

    #[test]
    fn the_context_gives_way_to_a_question_near_the_limit() {
        let counter = Counter::Approximate;
        let budget = Budget {
            window: 400,
            reserve: 100,
        };
        let context: Vec<Message> = (0..20)
            .map(|i| context_line(i, &format!("context line {i:03} padded out")))
            .collect();
        // A question of about 270 tokens: it fits alone (with 297 to spend), not beside the
        // context's full quarter.
        let question = "y".repeat(1_070);
        assert!(check_question(&counter, budget, "Be brief.", &question).is_ok());
        let history = [turn(1, AiRole::User, &question)];
        let fitted = fit(&counter, budget, "Be brief.", &context, &history).unwrap();
        assert!(
            fitted.tokens <= budget.prompt_tokens() + REPLY_PRIMING,
            "{}",
            fitted.tokens
        );
        assert_eq!(fitted.messages.last().unwrap().content, question);
        assert!(fitted.omitted_context > 0);
    }

    #[test]
    fn everything_is_sent_when_it_fits() {
        let counter = Counter::Approximate;
        let budget = Budget {
            window: 100_000,
            reserve: 1_000,
        };
        let fitted = fit(&counter, budget, "Be brief.", &[], &conversation()).unwrap();
        assert_eq!(fitted.omitted_messages, 0);
        assert_eq!(fitted.messages.len(), 401);
    }

    #[test]
    fn a_question_that_cannot_fit_is_refused() {
        let counter = Counter::Approximate;
        let budget = Budget {
            window: 100,
            reserve: 50,
        };
        let long = "x".repeat(400);
        let refused = check_question(&counter, budget, "Be brief.", &long).unwrap_err();
        assert_eq!(refused.limit, 47);
        assert!(refused.needed > refused.limit);
        let history = [turn(1, AiRole::User, &long)];
        assert!(fit(&counter, budget, "Be brief.", &[], &history).is_err());
        assert!(check_question(&counter, budget, "Be brief.", "short").is_ok());
    }
}
