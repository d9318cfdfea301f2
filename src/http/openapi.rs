//! The OpenAPI document, generated from the handlers' annotations: `GET /api/schema/` (YAML, or
//! JSON with `?format=json`), Swagger UI at `/api/docs/` and ReDoc at `/api/redoc/`, every asset
//! served by this process.

use axum::{
    extract::RawQuery,
    http::{header, HeaderMap},
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};
use serde_json::json;
use utoipa::{
    openapi::{
        extensions::ExtensionsBuilder,
        path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder},
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
        ResponseBuilder,
    },
    Modify, OpenApi,
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{
    accounts, ai, attachments, chats, direct, health, history, messages, pins, search, tokens,
};
use crate::{
    state::AppState,
    wire::{
        frames::{self, Protocol},
        schemas,
    },
};

/// The OpenAPI 3 document of the REST API, with the two sockets described as extra operations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "MRM Chat API",
        description = "Accounts, group chats with live delivery, and AI conversations.\n\n\
            Browser clients log in with `POST /api/login/`, which sets the `sessionid` cookie, and \
            repeat the `csrftoken` cookie in an `X-CSRFToken` header on every write. Other clients \
            take a token from `POST /api/tokens/` and send `Authorization: Bearer <token>`.\n\n\
            Lists are bare arrays, oldest first, bounded by `limit` (default 100, at most 500) and \
            the `before` / `after` id cursors, with a `Link: <…>; rel=\"next\"` header when more exist."
    ),
    paths(
        accounts::register, accounts::login, accounts::logout, accounts::me, accounts::users,
        tokens::create, tokens::revoke_current,
        chats::list, chats::create, chats::retrieve, chats::update, chats::destroy,
        chats::send_message, chats::messages, chats::add_participants, chats::remove_participant,
        chats::leave, direct::open,
        history::edit, history::delete, history::versions, history::events,
        history::react, history::unreact, history::read, history::receipts, messages::mentions, search::search_messages,
        pins::pin, pins::unpin, pins::list,
        attachments::upload, attachments::details, attachments::download, attachments::thumbnail,
        messages::list, messages::retrieve,
        ai::chats::list, ai::chats::create, ai::chats::retrieve, ai::chats::update,
        ai::chats::destroy, ai::replies::send_message, ai::replies::cancel,
        ai::replies::regenerate, ai::replies::edit_message, ai::replies::select_branch,
        ai::models::models,
        ai::messages::chat_messages, ai::chats::related_chat_context, ai::messages::all_messages,
        ai::messages::one_message, ai::usage::usage,
        health::healthz, health::readyz, health::metrics,
    ),
    components(schemas(
        schemas::ChatSendFrame, schemas::TypingRequestFrame, schemas::ChatChangeFrame,
        frames::MessageFrame,
        frames::PresenceFrame, frames::PresenceDeltaFrame, frames::TypingFrame,
        frames::MessageDeletedFrame, frames::MessageEditedFrame, frames::MemberFrame,
        frames::ChatRenamedFrame, frames::ReactionFrame,
        frames::MessagePinnedFrame, frames::MessageUnpinnedFrame, frames::ReadReceiptFrame, frames::ReadReceiptsSwitchedFrame,
        frames::ErrorFrame, schemas::AiAskFrame, schemas::AiCancelFrame,
        schemas::AiRegenerateFrame, schemas::AiEditFrame, schemas::AiSelectBranchFrame,
        frames::UserMessageFrame, frames::AssistantDeltaFrame, frames::AssistantMessageFrame,
        frames::BranchSelectedFrame,
        schemas::AiStreamEvent,
        // Named here because `RegisterRequest` refers to it through a hand-written schema.
        schemas::UserType,
    )),
    tags(
        (name = "Authentication", description = "Registration, login and logout, bearer tokens"),
        (name = "Users", description = "The caller and the user directory"),
        (name = "Chats", description = "Group chats, their owners and members"),
        (name = "Messages", description = "Sending and reading group chat messages"),
        (name = "Attachments", description = "Files shared in group chats: upload, then send in a message's `attachments`"),
        (name = "AI Chat", description = "Private conversations with a language model"),
        (name = "AI Messages", description = "Asking the model, its replies, and token usage"),
        (name = "WebSockets", description = "Live delivery: group chat and AI sockets"),
        (name = "Operations", description = "Health and readiness probes"),
    ),
    modifiers(&SecuritySchemes, &WebSockets),
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "sessionid",
                "The session cookie set by `POST /api/login/`.",
            ))),
        );
        components.add_security_scheme(
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRFToken",
                "The value of the `csrftoken` cookie; required on writes made with the session cookie.",
            ))),
        );
        components.add_security_scheme(
            "metrics",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`MRM_METRICS_TOKEN`, for `GET /metrics` only."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `POST /api/tokens/`; no CSRF header needed.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The two sockets, as GET operations under "WebSockets": how to connect, and the frames each
/// way, referencing component schemas: `x-client-frames` and `x-server-frames` for the original
/// protocol, `x-mrm-v2-client-frames` and `x-mrm-v2-server-frames` for `mrm.v2`.
struct WebSockets;

/// How either socket chooses its protocol, said once for both.
const PROTOCOLS: &str = "**Protocols.** A client that asks for nothing speaks the original \
    protocol: exactly the frames of the service mrm-chat replaces (`x-client-frames`, \
    `x-server-frames`). A client that offers the subprotocol `mrm.v2` in `Sec-WebSocket-Protocol` \
    (the 101 answer names it), or adds `?protocol=mrm.v2` when it cannot set that header, speaks \
    `mrm.v2`: the original's frames plus every extension (`x-mrm-v2-client-frames`, \
    `x-mrm-v2-server-frames`). Any other `protocol=` value is refused with 400.";

/// The frames of one socket, each way, in each protocol.
struct SocketFrames<'a> {
    client: &'a [&'a str],
    server: &'a [&'a str],
    v2_client: &'a [&'a str],
    v2_server: &'a [&'a str],
}

impl Modify for WebSockets {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let frames = |names: &[&str]| {
            json!(names
                .iter()
                .map(|n| json!({ "$ref": format!("#/components/schemas/{n}") }))
                .collect::<Vec<_>>())
        };
        let socket = |summary: &str, description: &str, id: &str, sent: SocketFrames| {
            let description = format!("{description}\n\n{PROTOCOLS}");
            let operation = OperationBuilder::new()
                .tag("WebSockets")
                .summary(Some(summary))
                .description(Some(description))
                .operation_id(Some(id))
                .parameter(
                    ParameterBuilder::new()
                        .name("id")
                        .parameter_in(ParameterIn::Path)
                        .required(utoipa::openapi::Required::True)
                        .schema(Some(i64::schema_ref())),
                )
                .parameter(
                    ParameterBuilder::new()
                        .name("protocol")
                        .parameter_in(ParameterIn::Query)
                        .description(Some(
                            "`mrm.v2` to speak the extended protocol without setting \
                             `Sec-WebSocket-Protocol`; any other value is refused with 400",
                        ))
                        .schema(Some(
                            utoipa::openapi::schema::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::String)
                                .enum_values(Some([Protocol::V2_NAME])),
                        )),
                )
                .response(
                    "101",
                    ResponseBuilder::new().description("Switching protocols: the socket is open"),
                )
                .response(
                    "400",
                    ResponseBuilder::new().description(
                        "Not a WebSocket handshake, a bad resume parameter, or an unknown protocol",
                    ),
                )
                .response(
                    "403",
                    ResponseBuilder::new().description(
                        "Refused before the upgrade: anonymous, not allowed, or a foreign Origin",
                    ),
                )
                .response("404", ResponseBuilder::new().description("Not a valid id"))
                .response(
                    "503",
                    ResponseBuilder::new().description("The server is at its connection limit"),
                )
                .extensions(Some(
                    ExtensionsBuilder::new()
                        .add("x-client-frames", frames(sent.client))
                        .add("x-server-frames", frames(sent.server))
                        .add("x-mrm-v2-client-frames", frames(sent.v2_client))
                        .add("x-mrm-v2-server-frames", frames(sent.v2_server))
                        .build(),
                ))
                .build();
            PathItemBuilder::new()
                .operation(HttpMethod::Get, operation)
                .build()
        };
        openapi.paths.paths.insert(
            "/ws/chat/{id}/".into(),
            socket(
                "Group chat socket",
                "Connect as a participant (session cookie or bearer token; browsers must be on a \
                 trusted Origin). Add `?after_seq=N` (or `?after=<message id>`) to first receive \
                 every message after N, then live ones, with no gap and no duplicate. Close codes: \
                 1001 server going away, 1009 frame over 128 KiB, 1011 try again, 4001 credentials \
                 ended (log in again), 4003 no longer a participant, 4004 chat deleted, 4008 too \
                 slow (reconnect with `after_seq`). A user over `MRM_MAX_SOCKETS_PER_USER` \
                 sockets is answered 429. In the original protocol every client frame is a message \
                 (`type` is not read); in `mrm.v2` presence comes as one full list shortly after \
                 connecting, then as coalesced `joined`/`left` deltas; and every other change \
                 of the chat's log (`message_edited`, `message_deleted`, `message_pinned`, \
                 `message_unpinned`, …) comes in log order \
                 with its position in `seq`, positions shared with `message.seq`: resume with \
                 `after_seq` set to the last position seen, whatever its frame.",
                "chat_socket",
                SocketFrames {
                    client: &["ChatSendFrame"],
                    server: &["MessageFrame", "ErrorFrame"],
                    v2_client: &["ChatSendFrame", "TypingRequestFrame", "ChatChangeFrame"],
                    v2_server: &[
                        "MessageFrame",
                        "PresenceFrame",
                        "PresenceDeltaFrame",
                        "TypingFrame",
                        "MessageEditedFrame",
                        "MessageDeletedFrame",
                        "MemberFrame",
                        "ChatRenamedFrame",
                        "ReactionFrame",
                        "MessagePinnedFrame",
                        "MessageUnpinnedFrame",
                        "ReadReceiptFrame",
                        "ReadReceiptsSwitchedFrame",
                        "ErrorFrame",
                    ],
                },
            ),
        );
        openapi.paths.paths.insert(
            "/ws/ai-chat/{id}/".into(),
            socket(
                "AI chat socket",
                "Connect as the AI chat's owner. The saved question comes back as \
                 `user_message`, the saved reply as `assistant_message`. In the original protocol \
                 a frame whose `type` is not `message` (a missing `type` means `message`) is \
                 ignored without a reply. In `mrm.v2` the reply also streams as `assistant_delta` \
                 frames before it, a socket opened while a reply runs first gets the text so far, \
                 `{\"type\": \"cancel\"}` stops the reply (on whichever node runs it), \
                 `{\"type\": \"regenerate\"}` answers the last question again, `{\"type\": \"edit\", \
                 \"message\": id, \"content\": …}` asks a question in place of an earlier one on a \
                 new branch, `{\"type\": \"select_branch\", \"message\": id}` shows the branch \
                 through a message (every socket of the chat then gets `branch_selected`), \
                 `user_message` and `assistant_message` also carry `parent` and `siblings`, \
                 `{\"type\": \"typing\"}` is ignored, and an unknown `type` is answered with an error. \
                 Replies stream to the owner's sockets on every node. Close codes: 1001 server going \
                 away, 1009 frame over 128 KiB, 4001 credentials ended (log in again), 4004 AI chat \
                 deleted, 4008 too slow.",
                "ai_chat_socket",
                SocketFrames {
                    client: &["AiAskFrame"],
                    server: &["UserMessageFrame", "AssistantMessageFrame", "ErrorFrame"],
                    v2_client: &[
                        "AiAskFrame",
                        "AiCancelFrame",
                        "AiRegenerateFrame",
                        "AiEditFrame",
                        "AiSelectBranchFrame",
                        "TypingRequestFrame",
                    ],
                    v2_server: &[
                        "UserMessageFrame",
                        "AssistantDeltaFrame",
                        "AssistantMessageFrame",
                        "BranchSelectedFrame",
                        "ErrorFrame",
                    ],
                },
            ),
        );
    }
}

trait SchemaRef {
    fn schema_ref() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>;
}

impl SchemaRef for i64 {
    fn schema_ref() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .into()
    }
}

/// `/api/schema/`, Swagger UI under `/api/docs/` and ReDoc at `/api/redoc/`.
pub fn router() -> Router<AppState> {
    let swagger = SwaggerUi::new("/api/docs").config(
        Config::new(["/api/schema/?format=json"])
            .try_it_out_enabled(true)
            .persist_authorization(true),
    );
    Router::new()
        .route("/api/schema", get(schema))
        .route("/api/redoc", get(redoc))
        .merge(swagger)
}

/// `GET /api/schema/`: YAML by default, JSON with `?format=json` (or `Accept: application/json`).
async fn schema(RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let wants_json = query.as_deref().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "format" && v == "json")
    }) || headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let doc = ApiDoc::openapi();
    if wants_json {
        return axum::Json(doc).into_response();
    }
    match doc.to_yaml() {
        Ok(yaml) => (
            [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
            yaml,
        )
            .into_response(),
        Err(err) => crate::error::ApiError::Internal(anyhow::anyhow!("schema as YAML: {err}"))
            .into_response(),
    }
}

/// `GET /api/redoc/`: ReDoc, from the bundle this server embeds. The bundle links its maker's
/// logo from a CDN; the content security policy keeps that (and anything else) from loading, so
/// the page never reaches beyond this server.
async fn redoc() -> impl IntoResponse {
    const POLICY: &str = "default-src 'self'; script-src 'self' blob:; worker-src 'self' blob:; \
                          style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
                          connect-src 'self'";
    let page = Html(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>MRM Chat API — ReDoc</title>
  <style>body { margin: 0; padding: 0; }</style>
</head>
<body>
  <redoc spec-url="/api/schema/?format=json"></redoc>
  <script src="/static/redoc/redoc.standalone.js"></script>
</body>
</html>
"#,
    );
    ([(header::CONTENT_SECURITY_POLICY, POLICY)], page)
}
