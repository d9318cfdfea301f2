//! Replies as jobs: listening in on one that is running, cancelling it, and the limits on how
//! many run at once. The model is a fake whose reply the test writes piece by piece; the
//! database is a real SQLite file.

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::{
    sync::{broadcast, mpsc},
    time::timeout,
};

use super::*;
use crate::{
    ai::provider::{ChatProvider, EventStream},
    store::{ai::AiChatFields, users::NewUser},
};

/// The longest a test waits for something that should come at once: only a broken job is that
/// slow, and the test then fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);

/// One request the fake model received, and the pen to write its reply with.
struct Upstream {
    prompt: Vec<ChatMessage>,
    events: mpsc::UnboundedSender<Result<StreamEvent, ProviderError>>,
}

impl Upstream {
    fn delta(&self, text: &str) {
        self.events
            .send(Ok(StreamEvent::Delta(text.to_owned())))
            .expect("the job still reads the reply");
    }
}

/// A model that answers with whatever the test sends through each request's `Upstream`, and
/// ends the reply when the test drops it.
struct FakeModel {
    requests: mpsc::UnboundedSender<Upstream>,
}

impl ChatProvider for FakeModel {
    fn stream(
        &self,
        _model: &str,
        messages: Vec<ChatMessage>,
    ) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
        let (events, reply) = mpsc::unbounded_channel();
        let _ = self.requests.send(Upstream {
            prompt: messages,
            events,
        });
        let stream = futures_util::stream::unfold(reply, |mut reply| async move {
            reply.recv().await.map(|event| (event, reply))
        });
        Box::pin(async move { Ok(Box::pin(stream) as EventStream) })
    }
}

struct Fixture {
    generations: Arc<Generations>,
    route: Route,
    db: Db,
    requests: mpsc::UnboundedReceiver<Upstream>,
    _dir: tempfile::TempDir,
}

async fn fixture(max_per_user: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ai.sqlite3").display());
    let db = Db::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let model: Arc<dyn ChatProvider> = Arc::new(FakeModel { requests });
    let catalog = crate::ai::models::Catalog::single(model, "fake", "fake-model");
    let settings = ReplySettings {
        max_per_user,
        ..ReplySettings::default()
    };
    Fixture {
        route: catalog.route("fake/fake-model", false).unwrap(),
        generations: Generations::new(
            db.clone(),
            settings,
            Arc::new(crate::ai::bus::NoBus),
            Arc::default(),
        ),
        db,
        requests: requests_rx,
        _dir: dir,
    }
}

impl Fixture {
    async fn user(&self, name: &str) -> i64 {
        let user = store::users::create(
            &self.db,
            &NewUser {
                username: name,
                email: &format!("{name}@example.com"),
                password_hash: "unused",
                user_type: crate::domain::UserType::Student,
                is_staff: false,
                is_superuser: false,
            },
        )
        .await
        .unwrap();
        user.id
    }

    async fn ai_chat(&self, user_id: i64) -> i64 {
        let fields = AiChatFields {
            title: "questions",
            system_prompt: "Answer briefly.",
            related_chat_id: None,
            model: None,
        };
        store::ai::create(&self.db, user_id, &fields).await.unwrap()
    }

    async fn send(
        &self,
        user_id: i64,
        ai_chat_id: i64,
        content: &str,
    ) -> Result<AiMessage, SendError> {
        self.generations
            .send(Request {
                user_id,
                ai_chat_id,
                system_prompt: "Answer briefly.".into(),
                turn: Turn::Ask(content.into()),
                context: Vec::new(),
                route: Some(self.route.clone()),
            })
            .await
            .map(|started| started.question.expect("a question is stored"))
    }

    /// The next request the model receives.
    async fn upstream(&mut self) -> Upstream {
        timeout(WAIT, self.requests.recv())
            .await
            .expect("the job asks the model")
            .unwrap()
    }

    /// The AI chat's complete messages, as the next prompt would see them.
    async fn saved(&self, ai_chat_id: i64) -> Vec<(String, String)> {
        store::ai::history(&self.db, ai_chat_id)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.role.as_str().to_owned(), m.content))
            .collect()
    }
}

async fn next(events: &mut broadcast::Receiver<AiEvent>) -> AiEvent {
    timeout(WAIT, events.recv())
        .await
        .expect("an event comes")
        .expect("the listener kept up")
}

/// Waits for delta `text` of a reply; returns the reply's id.
async fn expect_delta(events: &mut broadcast::Receiver<AiEvent>, text: &str) -> i64 {
    match next(events).await {
        AiEvent::Delta { id, delta, .. } if delta == text => id,
        other => panic!("expected delta {text:?}, got {other:?}"),
    }
}

/// The deltas a listener is sent from now until the reply is saved, and the saved reply.
async fn rest_of_reply(events: &mut broadcast::Receiver<AiEvent>) -> (Vec<String>, AiMessageView) {
    let mut deltas = Vec::new();
    loop {
        match next(events).await {
            AiEvent::Delta { delta, .. } => deltas.push(delta),
            AiEvent::Reply(reply) => return (deltas, reply),
            AiEvent::UserMessage(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn user_message_of(event: AiEvent) -> AiMessageView {
    match event {
        AiEvent::UserMessage(message) => message,
        other => panic!("expected the user's message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_listener_joining_mid_reply_gets_the_text_so_far_then_exactly_the_rest() {
    let mut f = fixture(2).await;
    let ada = f.user("ada").await;
    let chat = f.ai_chat(ada).await;
    let mut from_the_start = f.generations.subscribe(chat);
    assert_eq!(from_the_start.in_progress, None);

    let question = f.send(ada, chat, "Say hello").await.unwrap();
    assert_eq!(
        user_message_of(next(&mut from_the_start.events).await).id,
        question.id
    );
    let upstream = f.upstream().await;
    assert_eq!(
        upstream.prompt.last(),
        Some(&ChatMessage::new("user", "Say hello"))
    );

    // Joined once the reply exists, before any of its text.
    let mut before_any_text = f.generations.subscribe(chat);
    let reply_id = match &before_any_text.in_progress {
        Some((id, text)) if text.is_empty() => *id,
        other => panic!("expected an empty reply in progress, got {other:?}"),
    };

    upstream.delta("Hel");
    upstream.delta("lo");
    // Once the first listener has both, the job has added both to the text so far.
    assert_eq!(
        expect_delta(&mut from_the_start.events, "Hel").await,
        reply_id
    );
    assert_eq!(
        expect_delta(&mut from_the_start.events, "lo").await,
        reply_id
    );
    let mut mid_reply = f.generations.subscribe(chat);
    assert_eq!(mid_reply.in_progress, Some((reply_id, "Hello".to_owned())));

    upstream.delta(", world");
    upstream.delta("!");
    drop(upstream); // the model ends its reply

    let (deltas, reply) = rest_of_reply(&mut mid_reply.events).await;
    assert_eq!(deltas, [", world", "!"], "the rest, each piece once");
    assert_eq!(reply.id, reply_id);
    assert_eq!(reply.content, "Hello, world!");
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));

    let (deltas, reply) = rest_of_reply(&mut before_any_text.events).await;
    assert_eq!(deltas, ["Hel", "lo", ", world", "!"]);
    assert_eq!(reply.content, "Hello, world!");
    let (deltas, _) = rest_of_reply(&mut from_the_start.events).await;
    assert_eq!(deltas, [", world", "!"]);

    assert_eq!(
        f.saved(chat).await,
        [
            ("user".to_owned(), "Say hello".to_owned()),
            ("assistant".to_owned(), "Hello, world!".to_owned())
        ]
    );
    assert_eq!(f.generations.subscribe(chat).in_progress, None);
}

/// Listeners join while the job appends on another thread: whenever each one joined, the text
/// it was given followed by the deltas it was sent is the whole reply. One listener paces the
/// others: each piece it hears, another listener joins, while the job goes on appending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_joining_at_any_moment_see_every_piece_exactly_once() {
    const PIECES: usize = 600; // fewer than the channel buffers, so no listener lags
    let mut f = fixture(2).await;
    let ada = f.user("ada").await;
    let chat = f.ai_chat(ada).await;
    let mut pacer = f.generations.subscribe(chat);
    f.send(ada, chat, "Count").await.unwrap();
    let upstream = f.upstream().await;
    // Every 16 pieces the job waits until listeners have kept up to a sixteenth of them, so on
    // a loaded machine it cannot finish before any listener joined; between those points it
    // appends while they join.
    let (joined_tx, mut joined) = tokio::sync::watch::channel(0usize);
    let writer = tokio::spawn(async move {
        for i in 0..PIECES {
            upstream.delta(&format!("{i} "));
            if i % 16 == 0 {
                let _ = joined.wait_for(|&n| n >= i / 16).await;
            }
        }
    });

    let mut listeners = Vec::new();
    loop {
        let subscription = f.generations.subscribe(chat);
        if let Some((_, so_far)) = subscription.in_progress {
            listeners.push((so_far, subscription.events));
            joined_tx.send_replace(listeners.len());
        }
        match next(&mut pacer.events).await {
            AiEvent::UserMessage(_) | AiEvent::Delta { .. } => {}
            AiEvent::Reply(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.unwrap();
    assert!(
        listeners.len() >= (PIECES - 1) / 16,
        "listeners joined while the reply ran: {}",
        listeners.len()
    );

    let whole: String = (0..PIECES).map(|i| format!("{i} ")).collect();
    for (so_far, mut events) in listeners {
        let (deltas, reply) = rest_of_reply(&mut events).await;
        assert_eq!(reply.content, whole);
        assert_eq!(
            so_far + &deltas.concat(),
            whole,
            "a listener missed or repeated a piece"
        );
    }
}

#[tokio::test]
async fn cancelling_keeps_what_was_written() {
    let mut f = fixture(2).await;
    let ada = f.user("ada").await;
    let chat = f.ai_chat(ada).await;
    let mut listener = f.generations.subscribe(chat);
    f.send(ada, chat, "Tell me a long story").await.unwrap();
    let upstream = f.upstream().await;
    upstream.delta("Once upon");
    upstream.delta(" a time");
    next(&mut listener.events).await; // the user's message
    expect_delta(&mut listener.events, "Once upon").await;
    expect_delta(&mut listener.events, " a time").await;

    assert!(f.generations.cancel(chat).await);
    let (deltas, reply) = rest_of_reply(&mut listener.events).await;
    assert_eq!(deltas, Vec::<String>::new());
    assert_eq!(reply.content, "Once upon a time");
    assert_eq!(reply.finish_reason.as_deref(), Some("cancelled"));
    assert!(
        upstream.events.is_closed(),
        "the request to the model was abandoned"
    );
    assert_eq!(
        f.saved(chat).await.last(),
        Some(&("assistant".to_owned(), "Once upon a time".to_owned()))
    );
    assert!(!f.generations.cancel(chat).await, "nothing runs any more");
}

#[tokio::test]
async fn a_second_reply_in_the_same_chat_waits_for_the_first_to_end() {
    let mut f = fixture(2).await;
    let ada = f.user("ada").await;
    let chat = f.ai_chat(ada).await;
    let mut listener = f.generations.subscribe(chat);
    f.send(ada, chat, "First question").await.unwrap();
    let upstream = f.upstream().await;

    let refused = f.send(ada, chat, "Second question").await;
    assert!(
        matches!(refused, Err(SendError::AlreadyRunning)),
        "{refused:?}"
    );

    upstream.delta("First answer");
    drop(upstream);
    let (_, reply) = rest_of_reply(&mut listener.events).await;
    assert_eq!(reply.content, "First answer");
    assert_eq!(
        f.saved(chat).await,
        [
            ("user".to_owned(), "First question".to_owned()),
            ("assistant".to_owned(), "First answer".to_owned())
        ],
        "the refused message was not saved"
    );

    // Once the reply is saved, the chat takes the next message.
    f.send(ada, chat, "Second question").await.unwrap();
    let upstream = f.upstream().await;
    assert_eq!(
        upstream.prompt.last(),
        Some(&ChatMessage::new("user", "Second question"))
    );
}

// On several worker threads: the listener may act on the reply while the job's thread is still
// finishing, which is when a place given back late would still be taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_has_at_most_the_configured_number_of_replies_running() {
    let mut f = fixture(2).await;
    let ada = f.user("ada").await;
    let bob = f.user("bob").await;
    let [first, second, third] = [
        f.ai_chat(ada).await,
        f.ai_chat(ada).await,
        f.ai_chat(ada).await,
    ];
    let mut first_listener = f.generations.subscribe(first);

    f.send(ada, first, "one").await.unwrap();
    let first_upstream = f.upstream().await;
    f.send(ada, second, "two").await.unwrap();
    let _second_upstream = f.upstream().await;
    let refused = f.send(ada, third, "three").await;
    assert!(matches!(refused, Err(SendError::TooMany)), "{refused:?}");
    assert_eq!(
        f.saved(third).await,
        [],
        "the refused message was not saved"
    );

    // The limit is per user.
    let bobs = f.ai_chat(bob).await;
    f.send(bob, bobs, "mine").await.unwrap();
    let _bobs_upstream = f.upstream().await;

    // A reply that ends frees its place before it is announced, so the listener may ask again
    // the moment it hears of it.
    drop(first_upstream);
    rest_of_reply(&mut first_listener.events).await;
    f.send(ada, third, "three").await.unwrap();
    let upstream = f.upstream().await;
    assert_eq!(
        upstream.prompt.last(),
        Some(&ChatMessage::new("user", "three"))
    );
}
