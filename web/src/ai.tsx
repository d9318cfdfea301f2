// AI conversations: the list, a new one (title, system prompt, optional linked chat), and one
// conversation whose replies stream in as they are written over the `mrm.v2` AI socket, with
// Stop and each reply's token usage, the model it asks, Regenerate for the last answer, Edit for
// a question (asked again on a new branch), and arrows between alternatives. A reply still being written when the page loads
// is picked up where it is: the socket first sends the text so far.

import { useEffect, useRef, useState } from "preact/hooks";
import { api, type AiChat, type AiMessage, type AiModel, type Chat } from "./api";
import { errorText } from "./text";

export function AiList(props: {
  chats: AiChat[];
  groups: Chat[];
  current: number | null;
  onCreated: (chat: AiChat) => void;
}) {
  const [title, setTitle] = useState("");
  const [prompt, setPrompt] = useState("");
  const [related, setRelated] = useState("");
  const [error, setError] = useState<string | null>(null);
  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    try {
      const chat = await api.createAiChat(title.trim() || "New conversation", prompt, related ? Number(related) : null);
      setTitle("");
      setPrompt("");
      setRelated("");
      props.onCreated(chat);
    } catch (err) {
      setError(errorText(err));
    }
  }
  return (
    <section class="ai-list" aria-label="AI conversations">
      <h2 class="list-title">AI conversations</h2>
      <ul class="chats">
        {props.chats.map((chat) => (
          <li key={chat.id}>
            <a href={`#/ai/${chat.id}`} aria-current={chat.id === props.current ? "page" : undefined}>
              <span class="name">{chat.title}</span>
            </a>
          </li>
        ))}
      </ul>
      <form class="new-ai" onSubmit={submit}>
        <label>
          New AI conversation
          <input name="ai-title" placeholder="Title" value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
        </label>
        <label>
          System prompt
          <textarea name="ai-prompt" rows={2} value={prompt} onInput={(e) => setPrompt(e.currentTarget.value)} />
        </label>
        <label>
          Linked chat
          <select name="ai-related" value={related} onChange={(e) => setRelated(e.currentTarget.value)}>
            <option value="">None</option>
            {props.groups.map((g) => (
              <option key={g.id} value={String(g.id)}>
                {g.name}
              </option>
            ))}
          </select>
        </label>
        {error && <p class="error">{error}</p>}
        <button type="submit">Start</button>
      </form>
    </section>
  );
}

interface Streaming {
  id: number;
  content: string;
}

export function AiView(props: { chatId: number; onBack: () => void; onChanged: () => void }) {
  const { chatId } = props;
  const [chat, setChat] = useState<AiChat | null>(null);
  const [messages, setMessages] = useState<AiMessage[]>([]);
  const [streaming, setStreaming] = useState<Streaming | null>(null);
  const [draft, setDraft] = useState("");
  const [withContext, setWithContext] = useState(false);
  const [live, setLive] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [models, setModels] = useState<AiModel[]>([]);
  /** A regenerate or a branch switch asked for and not yet answered. */
  const [pending, setPending] = useState(false);
  /** A question being edited: its id and the new text. */
  const [editing, setEditing] = useState<{ id: number; text: string } | null>(null);
  const socket = useRef<WebSocket | null>(null);
  /** The latest reload: an older one that answers late is ignored. */
  const reloads = useRef(0);
  /** Whether a reload is on its way: a message heard meanwhile may be missing from its answer. */
  const reloading = useRef(false);

  useEffect(() => {
    api.aiModels().then(setModels, () => setModels([]));
  }, []);

  /** Reads the conversation again, as the branch it now shows. */
  function reload() {
    const mine = ++reloads.current;
    reloading.current = true;
    api.aiChat(chatId).then(
      (loaded) => {
        if (mine !== reloads.current) return;
        reloading.current = false;
        setChat(loaded);
        setMessages(loaded.messages);
        setPending(false);
      },
      () => {
        if (mine === reloads.current) reloading.current = false;
        setPending(false);
      },
    );
  }

  /** Sends a regenerate or a branch switch; nothing more is offered until it is answered. */
  function send(frame: Record<string, unknown>) {
    if (!socket.current || socket.current.readyState !== WebSocket.OPEN) return;
    setError(null);
    setPending(true);
    socket.current.send(JSON.stringify(frame));
  }

  useEffect(() => {
    let stopped = false;
    let attempt = 0;
    let timer: number | undefined;
    api.aiChat(chatId).then(
      (loaded) => {
        if (stopped) return;
        setChat(loaded);
        setMessages(loaded.messages);
        connect();
      },
      (err) => setError(errorText(err)),
    );
    function connect() {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const ws = new WebSocket(`${scheme}://${location.host}/ws/ai-chat/${chatId}/`, ["mrm.v2"]);
      socket.current = ws;
      ws.onopen = () => {
        attempt = 0;
        setLive(true);
        // A reply in progress is sent again from its start; one that ended while the socket was
        // away is in the history: drop the partial text and read the branch shown again (it may
        // have changed meanwhile).
        setStreaming(null);
        if (!stopped) reload();
      };
      ws.onmessage = (event) => {
        const frame = JSON.parse(String(event.data)) as { type: string; message?: Record<string, unknown> };
        const m = frame.message ?? {};
        if (frame.type === "user_message") {
          const question = m as unknown as AiMessage;
          if (reloading.current || (question.siblings?.length ?? 1) > 1) reload();
          else setMessages((list) => upsert(list, question));
        } else if (frame.type === "assistant_delta") {
          setPending(false);
          const id = Number(m.id);
          setStreaming((s) => ({ id, content: (s && s.id === id ? s.content : "") + String(m.delta ?? "") }));
        } else if (frame.type === "assistant_message") {
          const usage = (m.usage ?? {}) as { prompt_tokens?: number; completion_tokens?: number; total_tokens?: number };
          const reply: AiMessage = {
            ...(m as unknown as AiMessage),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
          };
          setStreaming(null);
          // Another answer to the same question replaces the one shown: read the branch again.
          if (reloading.current || (reply.siblings?.length ?? 1) > 1) reload();
          else setMessages((list) => upsert(list, reply));
          props.onChanged();
        } else if (frame.type === "branch_selected") {
          reload();
        } else if (frame.type === "error") {
          setError(String((frame as unknown as { message: string }).message));
          setPending(false);
          setStreaming(null);
        }
      };
      ws.onclose = (event) => {
        if (stopped || socket.current !== ws) return;
        setLive(false);
        if (event.code === 4001 || event.code === 4004) {
          setError(event.code === 4001 ? "Your session ended. Log in again." : "This conversation was deleted.");
          return;
        }
        const wait = Math.round(Math.min(15_000, 500 * 2 ** attempt) * (0.5 + Math.random()));
        attempt += 1;
        timer = window.setTimeout(connect, wait);
      };
    }
    return () => {
      stopped = true;
      if (timer !== undefined) window.clearTimeout(timer);
      socket.current?.close(1000);
      socket.current = null;
    };
  }, [chatId]);

  function submit(event: Event) {
    event.preventDefault();
    const content = draft.trim();
    if (!content || !socket.current || socket.current.readyState !== WebSocket.OPEN) return;
    setError(null);
    socket.current.send(JSON.stringify({ type: "message", content, include_related_chat_context: withContext }));
    setDraft("");
  }

  function stop() {
    socket.current?.send(JSON.stringify({ type: "cancel" }));
  }

  async function chooseModel(model: string) {
    try {
      setChat(await api.setAiModel(chatId, model));
    } catch (err) {
      setError(errorText(err));
    }
  }

  const last = messages[messages.length - 1];
  const idle = !streaming && !pending && live;

  function askAgain(event: Event) {
    event.preventDefault();
    const content = editing?.text.trim();
    if (!editing || !content) return;
    send({ type: "edit", message: editing.id, content, include_related_chat_context: withContext });
    setEditing(null);
  }

  return (
    <section class="chat ai" aria-label={chat?.title ?? "AI conversation"}>
      <header>
        <button type="button" class="back" onClick={props.onBack} aria-label="Back to chats">
          ←
        </button>
        <h2>{chat?.title ?? "AI conversation"}</h2>
        {models.length > 0 && (
          <select
            class="model"
            aria-label="Model"
            value={chat?.model ?? ""}
            onChange={(e) => chooseModel(e.currentTarget.value)}
          >
            {chat?.model && !models.some((m) => m.id === chat.model) && (
              <option value={chat.model}>{chat.model} (no longer offered)</option>
            )}
            {models.map((m) => (
              <option key={m.id} value={m.id}>
                {m.id}
              </option>
            ))}
          </select>
        )}
        <span class="state" role="status">
          {live ? (chat?.related_chat_name ? `Linked to ${chat.related_chat_name}` : "Connected") : "Connecting…"}
        </span>
      </header>
      <div class="messages" role="log" aria-live="polite" aria-relevant="additions" tabIndex={0} aria-label="Conversation">
        <ol>
          {messages.map((m) => (
            <li key={m.id} class={`message ${m.role === "user" ? "mine" : "assistant"}`}>
              <div class="meta">
                <span class="sender">{m.role === "user" ? "You" : "Assistant"}</span>
                {m.role === "assistant" && m.total_tokens != null && (
                  <span class="usage">
                    {" "}
                    · {m.total_tokens} tokens{m.usage_estimated ? " (estimated)" : ""}
                  </span>
                )}
                {m.finish_reason === "cancelled" && <span class="usage"> · stopped</span>}
                {m.finish_reason === "interrupted" && <span class="usage"> · interrupted</span>}
              </div>
              {editing?.id === m.id ? (
                <form class="edit" onSubmit={askAgain}>
                  <textarea
                    aria-label="Edit question"
                    rows={2}
                    value={editing.text}
                    onInput={(e) => setEditing({ id: m.id, text: e.currentTarget.value })}
                  />
                  <button type="submit" disabled={!idle}>
                    Ask again
                  </button>
                  <button type="button" class="link" onClick={() => setEditing(null)}>
                    Cancel
                  </button>
                </form>
              ) : (
                <p class="content">{m.content}</p>
              )}
              <Alternatives
                message={m}
                disabled={!!streaming || pending}
                onSelect={(id) => send({ type: "select_branch", message: id })}
              />
              {m === last && m.role === "assistant" && idle && (
                <button type="button" class="link" onClick={() => send({ type: "regenerate" })}>
                  Regenerate
                </button>
              )}
              {m.role === "user" && idle && editing?.id !== m.id && (
                <button type="button" class="link" onClick={() => setEditing({ id: m.id, text: m.content })}>
                  Edit
                </button>
              )}
            </li>
          ))}
          {streaming && (
            <li class="message assistant streaming" aria-busy="true">
              <div class="meta">
                <span class="sender">Assistant</span> · writing…
              </div>
              <p class="content">{streaming.content}</p>
            </li>
          )}
        </ol>
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <form class="composer" onSubmit={submit}>
        <label class="visually-hidden" for="ai-text">
          Question
        </label>
        <textarea
          id="ai-text"
          name="question"
          rows={2}
          value={draft}
          onInput={(e) => setDraft(e.currentTarget.value)}
          onKeyDown={(e) => {
            // Enter while an input method composes confirms the composition, not the question.
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e);
          }}
        />
        {chat?.related_chat != null && (
          <label class="check">
            <input type="checkbox" checked={withContext} onChange={(e) => setWithContext(e.currentTarget.checked)} /> Use the
            linked chat
          </label>
        )}
        {streaming ? (
          <button type="button" class="danger" onClick={stop}>
            Stop
          </button>
        ) : (
          <button type="submit" disabled={!live}>
            Ask
          </button>
        )}
      </form>
    </section>
  );
}

/** Arrows between a message's alternatives (other answers, other versions of a question). */
function Alternatives(props: { message: AiMessage; disabled: boolean; onSelect: (id: number) => void }) {
  const siblings = props.message.siblings ?? [];
  const at = siblings.indexOf(props.message.id);
  if (siblings.length < 2 || at === -1) return null;
  const noun = props.message.role === "user" ? "version" : "answer";
  return (
    <span class="alternatives">
      <button type="button" class="link" aria-label={`Previous ${noun}`} disabled={props.disabled || at === 0} onClick={() => props.onSelect(siblings[at - 1])}>
        ‹
      </button>
      <span aria-hidden="true">
        {at + 1} / {siblings.length}
      </span>
      <span class="visually-hidden">
        {`${noun[0].toUpperCase()}${noun.slice(1)} ${at + 1} of ${siblings.length}`}
      </span>
      <button
        type="button"
        class="link"
        aria-label={`Next ${noun}`}
        disabled={props.disabled || at === siblings.length - 1}
        onClick={() => props.onSelect(siblings[at + 1])}
      >
        ›
      </button>
    </span>
  );
}

function upsert(list: AiMessage[], message: AiMessage): AiMessage[] {
  const at = list.findIndex((m) => m.id === message.id);
  if (at === -1) return [...list, message];
  const next = [...list];
  next[at] = { ...next[at], ...message };
  return next;
}
