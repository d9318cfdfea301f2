//! How a socket ends: the close codes chat and AI sockets can be sent (RFC 6455 §7.4: 1000–2999
//! are the protocol's, 4000–4999 private use), with a short reason.

/// The server is going away (shutdown, deploy): reconnect, with `after_seq`.
pub const GOING_AWAY: u16 = 1001;
/// A frame over the 128 KiB limit.
pub const TOO_BIG: u16 = 1009;
/// The server could not serve the chat just now: reconnect.
pub const INTERNAL: u16 = 1011;
/// The credential the socket was opened with has ended (logout, revoked token, password changed,
/// account deactivated or deleted): authenticate again before reconnecting.
pub const REAUTHENTICATE: u16 = 4001;
/// The user is no longer a participant.
pub const REMOVED: u16 = 4003;
/// The chat was deleted.
pub const CHAT_DELETED: u16 = 4004;
/// The client fell behind; reconnect with `after_seq` to get what it missed.
pub const TOO_SLOW: u16 = 4008;

/// A close frame to send: its code and reason (at most 123 bytes, RFC 6455 §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// One of this module's codes.
    pub code: u16,
    /// A short, fixed explanation sent with the code; clients should act on the code.
    pub reason: &'static str,
}

/// The close of a socket whose credential ended.
pub const CREDENTIALS_ENDED: Close = Close {
    code: REAUTHENTICATE,
    reason: "credentials ended; log in again",
};

/// The close of a socket whose client did not take what was written within the write timeout.
pub const NOT_READING: Close = Close {
    code: TOO_SLOW,
    reason: "not reading, reconnect",
};

/// The close owed for a read error: 1009 for a frame over the size limit (RFC 6455 §7.4.1,
/// "Message Too Big"); other read errors just end the socket.
pub fn for_read_error(err: axum::Error) -> Option<Close> {
    let inner = err.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some(Close {
            code: TOO_BIG,
            reason: "frame too large",
        }),
        _ => None,
    }
}
