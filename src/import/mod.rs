//! `mrm-chat import-django`: moves a deployment of MRM Chat 2 (Django) to mrm-chat with its
//! users, chats, messages and AI conversations, keeping every id, so clients that cached ids
//! find the same objects.
//!
//! The run reads the source twice. The first pass checks it and compares it with the target:
//! a row the target holds under the same id must be the same row (a user's username and date
//! joined; a chat's creation time; a message's chat, sender and time; an AI chat's owner and
//! creation time; an AI message's chat, role and time: what an earlier import wrote and mrm-chat
//! never changes), else nothing is written. The second pass writes, in batches of one
//! transaction each, only rows whose ids are free: a run that stopped part-way is completed by
//! running it again, and a second run changes nothing. `--dry-run` stops after the first pass.
//!
//! Rules the original does not decide:
//! - a chat's owner is its first participant (the original adds the creator first);
//! - participants joined when their chat was created;
//! - a message's `seq` is its place in its chat in (time, id) order;
//! - an AI chat's messages form one branch, each following the one before it (by id);
//! - replies are recorded as written by `--model` (the original's `OPENAI_MODEL`, default
//!   `gpt-3.5-turbo`), and their tokens are added to their owner's usage per UTC day;
//! - passwords keep their Django hashes, verified at login and replaced by Argon2id then; a
//!   hash in no format Django documents is imported unusable, and its user listed.

pub mod source;

use std::collections::{HashMap, HashSet};

use futures_util::{stream::BoxStream, StreamExt};

use self::source::{Counts, Source};
use crate::{
    auth::password::is_django_hash,
    domain::username,
    store::{
        self,
        import::{ImportedAiMessage, ImportedChat, ImportedMessage, ImportedUser},
        Db,
    },
};

/// Rows read, compared and written at a time.
const BATCH: usize = 1000;
/// Conflicts listed in a refusal (the rest are counted).
const LISTED_CONFLICTS: usize = 10;

/// Why an import did not run, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The source cannot be read, or is not a database of MRM Chat 2. Nothing was written.
    #[error("{0}")]
    Source(String),
    /// The target already holds other data under ids of the source. Nothing was written.
    #[error("the target database already holds different data under the source's ids; nothing was written:\n{0}")]
    Conflict(String),
    /// Writing to the target failed; running the import again completes it.
    #[error("writing to the target database failed (run the import again to complete it): {0}")]
    Target(#[from] sqlx::Error),
}

/// What to import, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The source database's URL (`postgres://…`, `sqlite:…` or a path).
    pub from: String,
    /// Check and count only; write nothing.
    pub dry_run: bool,
    /// The model replies are recorded as written by.
    pub reply_model: String,
}

/// Rows of one kind: how many the source holds, how many were written (or would be), and how
/// many the target held already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub source: u64,
    pub written: u64,
    pub present: u64,
}

/// What an import did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub dry_run: bool,
    pub users: Tally,
    pub chats: Tally,
    pub messages: Tally,
    pub ai_chats: Tally,
    pub ai_messages: Tally,
    /// Users whose password hash is in no known format: imported without a usable password.
    pub unusable_passwords: Vec<String>,
}

impl Summary {
    /// Whether the run wrote (or would write) nothing.
    pub fn unchanged(&self) -> bool {
        [
            self.users,
            self.chats,
            self.messages,
            self.ai_chats,
            self.ai_messages,
        ]
        .iter()
        .all(|t| t.written == 0)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        writeln!(
            f,
            "{:<12} {:>10} {:>14} {:>16}",
            "", "in source", verb, "already present"
        )?;
        for (name, t) in [
            ("users", self.users),
            ("chats", self.chats),
            ("messages", self.messages),
            ("AI chats", self.ai_chats),
            ("AI messages", self.ai_messages),
        ] {
            writeln!(
                f,
                "{name:<12} {:>10} {:>14} {:>16}",
                t.source, t.written, t.present
            )?;
        }
        if !self.unusable_passwords.is_empty() {
            writeln!(
                f,
                "imported without a usable password (hash in an unknown format; set one with \
                 `mrm-chat changepassword` or the admin area): {}",
                self.unusable_passwords.join(", ")
            )?;
        }
        if self.unchanged() {
            write!(
                f,
                "nothing to import: the target already holds everything in the source"
            )?;
        } else if self.dry_run {
            write!(f, "dry run: nothing was written")?;
        } else {
            write!(f, "done")?;
        }
        Ok(())
    }
}

/// Reports progress: rows done out of all rows of the source.
pub trait Progress {
    fn start(&self, phase: &str, total: u64);
    fn advance(&self, rows: u64);
    fn finish(&self);
}

/// No progress report.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Reads `stream` in batches of [`BATCH`], handing each to `each`.
async fn batches<T>(
    mut stream: BoxStream<'_, Result<T, ImportError>>,
    mut each: impl AsyncFnMut(Vec<T>) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(row) = stream.next().await {
        batch.push(row?);
        if batch.len() == BATCH {
            each(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).await?;
        }
    }
    if !batch.is_empty() {
        each(batch).await?;
    }
    Ok(())
}

/// Conflicts found while comparing: listed up to [`LISTED_CONFLICTS`], counted beyond.
#[derive(Default)]
struct Conflicts {
    listed: Vec<String>,
    more: u64,
}

impl Conflicts {
    fn add(&mut self, text: String) {
        if self.listed.len() < LISTED_CONFLICTS {
            self.listed.push(text);
        } else {
            self.more += 1;
        }
    }

    fn check(self) -> Result<(), ImportError> {
        if self.listed.is_empty() {
            return Ok(());
        }
        let mut text = self.listed.join("\n");
        if self.more > 0 {
            text.push_str(&format!("\n… and {} more", self.more));
        }
        Err(ImportError::Conflict(text))
    }
}

/// The user as mrm-chat stores it; `Err` names why it cannot be.
fn imported_user(u: source::SourceUser) -> Result<(ImportedUser, bool), String> {
    if !["owner", "student", "staff"].contains(&u.user_type.as_str()) {
        return Err(format!(
            "user #{} has an unknown user_type {:?}",
            u.id, u.user_type
        ));
    }
    let name = username::normalize(&u.username);
    if name.is_empty() || name.chars().count() > username::MAX_CHARS {
        return Err(format!(
            "user #{}: the username {:?} is empty or longer than {} characters once normalized",
            u.id,
            u.username,
            username::MAX_CHARS
        ));
    }
    // Django's own unusable passwords (`!…`) stay unusable, as they were.
    let known = is_django_hash(&u.password_hash) || u.password_hash.starts_with('!');
    let password_hash = if known {
        u.password_hash
    } else {
        "!imported: a password hash in an unknown format".to_owned()
    };
    Ok((
        ImportedUser {
            username: name,
            password_hash,
            ..u
        },
        !known,
    ))
}

/// Assigns `seq` 1… per chat to messages read per chat in (time, id) order.
struct Positions {
    chat: i64,
    seq: i64,
}

impl Positions {
    fn next(&mut self, chat: i64) -> i64 {
        if chat != self.chat {
            (self.chat, self.seq) = (chat, 0);
        }
        self.seq += 1;
        self.seq
    }
}

/// The parent of each AI message: the one before it in its AI chat.
struct Branch {
    chat: i64,
    last: Option<i64>,
}

impl Branch {
    fn next(&mut self, chat: i64, id: i64) -> Option<i64> {
        if chat != self.chat {
            (self.chat, self.last) = (chat, None);
        }
        self.last.replace(id)
    }
}

/// Imports the database `options.from` names into `db` (migrated), reporting to `progress`.
/// Errors: `Source` and `Conflict` before anything is written; `Target` when a write fails.
pub async fn import(
    db: &Db,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Summary, ImportError> {
    let source = Source::open(&options.from).await?;
    let counts = source.check().await?;
    progress.start("checking", counts.total());
    let (mut summary, owners) = compare(db, &source, counts, progress).await;
    progress.finish();
    let owners = owners?;
    summary.dry_run = options.dry_run;
    if options.dry_run {
        return Ok(summary);
    }
    if !summary.unchanged() {
        progress.start("importing", counts.total());
        let written = write(db, &source, &owners, &options.reply_model, progress).await?;
        progress.finish();
        let expected = [
            summary.users.written,
            summary.chats.written,
            summary.messages.written,
            summary.ai_chats.written,
            summary.ai_messages.written,
        ];
        if written != expected {
            return Err(ImportError::Source(format!(
                "rows the check found free were taken while the import wrote (written {written:?}, \
                 expected {expected:?}): is mrm-chat serving this database? Stop it and run the \
                 import again"
            )));
        }
    }
    // Also when nothing was left to write: a run that stopped after its last batch moves the
    // sequences here.
    store::import::advance_sequences(db).await?;
    Ok(summary)
}

/// The first pass: checks every row, compares it with what the target holds under its id, and
/// counts what would be written. Answers the AI chats' owners, which their replies' usage needs.
async fn compare(
    db: &Db,
    source: &Source,
    counts: Counts,
    progress: &dyn Progress,
) -> (Summary, Result<HashMap<i64, i64>, ImportError>) {
    let mut summary = Summary {
        users: Tally {
            source: counts.users,
            ..Tally::default()
        },
        chats: Tally {
            source: counts.chats,
            ..Tally::default()
        },
        messages: Tally {
            source: counts.messages,
            ..Tally::default()
        },
        ai_chats: Tally {
            source: counts.ai_chats,
            ..Tally::default()
        },
        ai_messages: Tally {
            source: counts.ai_messages,
            ..Tally::default()
        },
        ..Summary::default()
    };
    let owners = compare_all(db, source, &mut summary, progress).await;
    (summary, owners)
}

async fn compare_all(
    db: &Db,
    source: &Source,
    summary: &mut Summary,
    progress: &dyn Progress,
) -> Result<HashMap<i64, i64>, ImportError> {
    let mut conflicts = Conflicts::default();
    let mut usernames: HashSet<String> = HashSet::new();
    batches(source.users(), async |batch| {
        progress.advance(batch.len() as u64);
        let ids: Vec<i64> = batch.iter().map(|u| u.id).collect();
        let existing: HashMap<i64, (String, chrono::DateTime<chrono::Utc>)> =
            store::import::existing_users(db, &ids)
                .await?
                .into_iter()
                .map(|(id, name, joined)| (id, (name, joined)))
                .collect();
        let mut fresh = Vec::new();
        for u in batch {
            let id = u.id;
            let (user, unusable) = match imported_user(u) {
                Ok(found) => found,
                Err(reason) => {
                    return Err(ImportError::Source(format!(
                        "the source cannot be imported: {reason}"
                    )))
                }
            };
            if !usernames.insert(user.username.clone()) {
                return Err(ImportError::Source(format!(
                    "the source cannot be imported: user #{id}'s username {:?} is another user's \
                     too once normalized (NFKC, as mrm-chat compares usernames)",
                    user.username
                )));
            }
            match existing.get(&id) {
                Some((name, joined)) if *name == user.username && *joined == user.date_joined => {
                    summary.users.present += 1;
                }
                Some((name, _)) => conflicts.add(format!(
                    "user #{id}: the target's is {name:?}, the source's {:?}",
                    user.username
                )),
                None => {
                    summary.users.written += 1;
                    if unusable {
                        summary.unusable_passwords.push(user.username.clone());
                    }
                    fresh.push(user.username);
                }
            }
        }
        for (name, holder) in store::import::username_holders(db, &fresh).await? {
            conflicts.add(format!(
                "username {name:?} is taken in the target by user #{holder}"
            ));
        }
        Ok(())
    })
    .await?;
    batches(source.chats(), async |batch| {
        progress.advance(batch.len() as u64);
        let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
        let existing: HashMap<i64, chrono::DateTime<chrono::Utc>> =
            store::import::existing_chats(db, &ids)
                .await?
                .into_iter()
                .collect();
        for c in batch {
            match existing.get(&c.id) {
                Some(created) if *created == c.created_at => summary.chats.present += 1,
                Some(_) => conflicts.add(format!(
                    "chat #{}: the target's was created at another time",
                    c.id
                )),
                None => summary.chats.written += 1,
            }
        }
        Ok(())
    })
    .await?;
    batches(source.messages(), async |batch| {
        progress.advance(batch.len() as u64);
        let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
        let existing: HashMap<i64, (i64, i64, chrono::DateTime<chrono::Utc>)> =
            store::import::existing_messages(db, &ids)
                .await?
                .into_iter()
                .map(|(id, chat, sender, at)| (id, (chat, sender, at)))
                .collect();
        for m in batch {
            match existing.get(&m.id) {
                Some(found) if *found == (m.chat_id, m.sender_id, m.timestamp) => {
                    summary.messages.present += 1
                }
                Some(_) => conflicts.add(format!(
                    "message #{}: the target's is another message",
                    m.id
                )),
                None => summary.messages.written += 1,
            }
        }
        Ok(())
    })
    .await?;
    let mut owners = HashMap::new();
    batches(source.ai_chats(), async |batch| {
        progress.advance(batch.len() as u64);
        let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
        let existing: HashMap<i64, (i64, chrono::DateTime<chrono::Utc>)> =
            store::import::existing_ai_chats(db, &ids)
                .await?
                .into_iter()
                .map(|(id, user, at)| (id, (user, at)))
                .collect();
        for c in batch {
            owners.insert(c.id, c.user_id);
            match existing.get(&c.id) {
                Some(found) if *found == (c.user_id, c.created_at) => summary.ai_chats.present += 1,
                Some(_) => conflicts.add(format!(
                    "AI chat #{}: the target's is another AI chat",
                    c.id
                )),
                None => summary.ai_chats.written += 1,
            }
        }
        Ok(())
    })
    .await?;
    batches(source.ai_messages(), async |batch| {
        progress.advance(batch.len() as u64);
        let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
        let existing: HashMap<i64, (i64, String, chrono::DateTime<chrono::Utc>)> =
            store::import::existing_ai_messages(db, &ids)
                .await?
                .into_iter()
                .map(|(id, chat, role, at)| (id, (chat, role, at)))
                .collect();
        for m in batch {
            if !["user", "assistant", "system"].contains(&m.role.as_str()) {
                return Err(ImportError::Source(format!(
                    "the source cannot be imported: AI message #{} has an unknown role {:?}",
                    m.id, m.role
                )));
            }
            match existing.get(&m.id) {
                Some((chat, role, at))
                    if (*chat, role.as_str(), *at)
                        == (m.ai_chat_id, m.role.as_str(), m.timestamp) =>
                {
                    summary.ai_messages.present += 1
                }
                Some(_) => conflicts.add(format!(
                    "AI message #{}: the target's is another message",
                    m.id
                )),
                None => summary.ai_messages.written += 1,
            }
        }
        Ok(())
    })
    .await?;
    conflicts.check()?;
    Ok(owners)
}

/// The second pass: writes every row whose id is free, table by table in the order their
/// references need.
async fn write(
    db: &Db,
    source: &Source,
    owners: &HashMap<i64, i64>,
    model: &str,
    progress: &dyn Progress,
) -> Result<[u64; 5], ImportError> {
    let mut written = [0_u64; 5];
    batches(source.users(), async |batch| {
        progress.advance(batch.len() as u64);
        let users: Vec<ImportedUser> = batch
            .into_iter()
            .map(|u| {
                imported_user(u)
                    .map(|(user, _)| user)
                    .map_err(ImportError::Source)
            })
            .collect::<Result<_, _>>()?;
        written[0] += store::import::insert_users(db, &users).await?;
        Ok(())
    })
    .await?;
    batches(source.chats(), async |mut batch| {
        progress.advance(batch.len() as u64);
        source.participants(&mut batch).await?;
        let chats: Vec<ImportedChat> = batch
            .into_iter()
            .map(|c| ImportedChat {
                id: c.id,
                name: c.name,
                created_at: c.created_at,
                participants: c.participants,
            })
            .collect();
        written[1] += store::import::insert_chats(db, &chats).await?;
        Ok(())
    })
    .await?;
    let mut positions = Positions { chat: 0, seq: 0 };
    batches(source.messages(), async |batch| {
        progress.advance(batch.len() as u64);
        let messages: Vec<ImportedMessage> = batch
            .into_iter()
            .map(|m| ImportedMessage {
                seq: positions.next(m.chat_id),
                id: m.id,
                chat_id: m.chat_id,
                sender_id: m.sender_id,
                content: m.content,
                created_at: m.timestamp,
            })
            .collect();
        written[2] += store::import::insert_messages(db, &messages).await?;
        Ok(())
    })
    .await?;
    batches(source.ai_chats(), async |batch| {
        progress.advance(batch.len() as u64);
        written[3] += store::import::insert_ai_chats(db, &batch).await?;
        Ok(())
    })
    .await?;
    let mut branch = Branch {
        chat: 0,
        last: None,
    };
    batches(source.ai_messages(), async |batch| {
        progress.advance(batch.len() as u64);
        let messages: Vec<ImportedAiMessage> = batch
            .into_iter()
            .map(|m| ImportedAiMessage {
                parent_id: branch.next(m.ai_chat_id, m.id),
                user_id: owners.get(&m.ai_chat_id).copied().unwrap_or_default(),
                id: m.id,
                ai_chat_id: m.ai_chat_id,
                role: m.role,
                content: m.content,
                created_at: m.timestamp,
                prompt_tokens: m.prompt_tokens,
                completion_tokens: m.completion_tokens,
                total_tokens: m.total_tokens,
            })
            .collect();
        written[4] += store::import::insert_ai_messages(db, &messages, model).await?;
        Ok(())
    })
    .await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_restart_per_chat() {
        let mut p = Positions { chat: 0, seq: 0 };
        let seqs: Vec<i64> = [1, 1, 1, 2, 2, 5].iter().map(|c| p.next(*c)).collect();
        assert_eq!(seqs, [1, 2, 3, 1, 2, 1]);
        let mut b = Branch {
            chat: 0,
            last: None,
        };
        let parents: Vec<Option<i64>> = [(1, 10), (1, 11), (2, 12), (2, 14)]
            .iter()
            .map(|(c, id)| b.next(*c, *id))
            .collect();
        assert_eq!(parents, [None, Some(10), None, Some(12)]);
    }
}
