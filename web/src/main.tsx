// mrm-chat's web client: sign in, the chat list, and a chat with live history. It speaks only
// the public REST API and the `mrm.v2` chat socket, so it is also a reference for other clients.

import { render } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError, type Attachment, type Chat, type Message, type User } from "./api";
import { ChatSocket, type Frame, type SocketState } from "./socket";

/** A message as the page shows it: saved, or sent and not yet confirmed, or failed. */
interface Shown {
  key: string;
  message: Message;
  state: "saved" | "sending" | "failed";
}

function chatIdFromHash(): number | null {
  const match = /^#\/chats\/(\d+)$/.exec(location.hash);
  return match ? Number(match[1]) : null;
}

function useHashChat(): [number | null, (id: number | null) => void] {
  const [id, setId] = useState(chatIdFromHash());
  useEffect(() => {
    const changed = () => setId(chatIdFromHash());
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return [id, (next) => (location.hash = next === null ? "" : `#/chats/${next}`)];
}

function App() {
  const [user, setUser] = useState<User | null | undefined>(undefined);
  useEffect(() => {
    api.me().then(setUser, () => setUser(null));
  }, []);
  if (user === undefined) return <p class="loading">Loading…</p>;
  if (user === null) return <SignIn onSignedIn={setUser} />;
  return <Home user={user} onSignedOut={() => setUser(null)} />;
}

function SignIn({ onSignedIn }: { onSignedIn: (user: User) => void }) {
  const [mode, setMode] = useState<"login" | "register">("login");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (mode === "register") await api.register(username, password);
      onSignedIn(await api.login(username, password));
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="signin">
      <h1>mrm-chat</h1>
      <form onSubmit={submit} aria-describedby={error ? "signin-error" : undefined}>
        <h2>{mode === "login" ? "Log in" : "Create an account"}</h2>
        <label>
          Username
          <input
            name="username"
            autocomplete="username"
            required
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
          />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autocomplete={mode === "login" ? "current-password" : "new-password"}
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        {error && (
          <p id="signin-error" class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {mode === "login" ? "Log in" : "Create account"}
        </button>
        <button
          type="button"
          class="link"
          onClick={() => setMode(mode === "login" ? "register" : "login")}
        >
          {mode === "login" ? "No account? Create one" : "Have an account? Log in"}
        </button>
      </form>
    </main>
  );
}

function lastActivity(chat: Chat): string {
  const last = chat.messages[chat.messages.length - 1];
  return last ? last.timestamp : chat.created_at;
}

function Home({ user, onSignedOut }: { user: User; onSignedOut: () => void }) {
  const [chats, setChats] = useState<Chat[]>([]);
  const [chatId, openChat] = useHashChat();
  const [error, setError] = useState<string | null>(null);
  const refresh = () =>
    api.chats().then(
      (list) => setChats([...list].sort((a, b) => lastActivity(b).localeCompare(lastActivity(a)))),
      (err) => (err instanceof ApiError && err.status === 403 ? onSignedOut() : setError(String(err))),
    );
  useEffect(() => {
    refresh();
    const timer = window.setInterval(refresh, 15_000);
    return () => window.clearInterval(timer);
  }, []);
  async function logout() {
    await api.logout().catch(() => undefined);
    onSignedOut();
  }
  const current = chats.find((c) => c.id === chatId) ?? null;
  return (
    <div class={`home ${chatId === null ? "list-open" : "chat-open"}`}>
      <nav class="sidebar" aria-label="Chats">
        <header>
          <span class="me">{user.username}</span>
          <button type="button" onClick={logout}>
            Log out
          </button>
        </header>
        <NewChat onCreated={(chat) => refresh().then(() => openChat(chat.id))} />
        {error && <p class="error">{error}</p>}
        <ul class="chats">
          {chats.map((chat) => (
            <li key={chat.id}>
              <a
                href={`#/chats/${chat.id}`}
                aria-current={chat.id === chatId ? "page" : undefined}
              >
                <span class="name">{chat.name}</span>
                {chat.unread_mentions > 0 && (
                  <span class="badge mention" title="Mentions of you">
                    @{chat.unread_mentions}
                  </span>
                )}
                {chat.unread_count > 0 && (
                  <span class="badge" aria-label={`${chat.unread_count} unread`}>
                    {chat.unread_count}
                  </span>
                )}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      {chatId !== null && (
        <ChatView
          key={chatId}
          chatId={chatId}
          chat={current}
          user={user}
          onBack={() => openChat(null)}
          onRead={refresh}
        />
      )}
    </div>
  );
}

function NewChat({ onCreated }: { onCreated: (chat: Chat) => void }) {
  const [name, setName] = useState("");
  const [members, setMembers] = useState("");
  const [error, setError] = useState<string | null>(null);
  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    const usernames = members
      .split(",")
      .map((m) => m.trim())
      .filter(Boolean);
    try {
      const chat = await api.createChat(name, usernames);
      setName("");
      setMembers("");
      onCreated(chat);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  }
  return (
    <form class="new-chat" onSubmit={submit}>
      <label>
        New chat
        <input
          name="chat-name"
          placeholder="Name"
          required
          value={name}
          onInput={(e) => setName(e.currentTarget.value)}
        />
      </label>
      <label>
        Members
        <input
          name="chat-members"
          placeholder="alice, bob"
          value={members}
          onInput={(e) => setMembers(e.currentTarget.value)}
        />
      </label>
      {error && <p class="error">{error}</p>}
      <button type="submit">Create</button>
    </form>
  );
}

function mergeSaved(list: Shown[], message: Message, replacing?: string): Shown[] {
  const without = list.filter((s) => s.key !== replacing && s.message.id !== message.id);
  const shown: Shown = { key: `m${message.id}`, message, state: "saved" };
  // Saved messages in id order (ids grow with seq within a chat), unconfirmed ones last.
  const saved = without.filter((s) => s.state === "saved");
  const pending = without.filter((s) => s.state !== "saved");
  const at = saved.findIndex((s) => s.message.id > message.id);
  if (at === -1) saved.push(shown);
  else saved.splice(at, 0, shown);
  return [...saved, ...pending];
}

function ChatView(props: {
  chatId: number;
  chat: Chat | null;
  user: User;
  onBack: () => void;
  onRead: () => void;
}) {
  const { chatId, user } = props;
  const [shown, setShown] = useState<Shown[]>([]);
  const [older, setOlder] = useState(true);
  const [state, setState] = useState<SocketState>({ kind: "connecting" });
  const [online, setOnline] = useState<Map<number, string>>(new Map());
  const [typing, setTyping] = useState<Map<number, { name: string; until: number }>>(new Map());
  const [draft, setDraft] = useState("");
  const [error, setError] = useState<string | null>(null);
  const socket = useRef<ChatSocket | null>(null);
  const list = useRef<HTMLOListElement>(null);
  const lastTyping = useRef(0);

  useEffect(() => {
    let cancelled = false;
    api.history(chatId).then(
      (page) => {
        if (cancelled) return;
        setShown(page.map((message) => ({ key: `m${message.id}`, message, state: "saved" })));
        setOlder(page.length === 50);
        const lastSeq = page.length ? page[page.length - 1].seq : 0;
        const live = new ChatSocket(chatId, lastSeq, onFrame, setState);
        socket.current = live;
        live.start();
      },
      (err) => setError(err instanceof Error ? err.message : String(err)),
    );
    return () => {
      cancelled = true;
      socket.current?.stop();
      socket.current = null;
    };
  }, [chatId]);

  function onFrame(frame: Frame) {
    switch (frame.type) {
      case "message":
        setShown((list) => mergeSaved(list, frame.message as Message));
        break;
      case "message_edited":
        setShown((list) =>
          list.map((s) =>
            s.message.id === frame.id
              ? {
                  ...s,
                  message: {
                    ...s.message,
                    content: String(frame.content),
                    edited_at: String(frame.edited_at),
                  },
                }
              : s,
          ),
        );
        break;
      case "message_deleted":
        setShown((list) =>
          list.map((s) =>
            s.message.id === frame.id
              ? { ...s, message: { ...s.message, content: "", deleted: true, attachments: [] } }
              : s,
          ),
        );
        break;
      case "presence": {
        const change = frame as unknown as {
          online?: { id: number; username: string }[];
          joined?: { id: number; username: string }[];
          left?: { id: number }[];
        };
        setOnline((current) => {
          const next = change.online ? new Map<number, string>() : new Map(current);
          for (const u of change.online ?? []) next.set(u.id, u.username);
          for (const u of change.joined ?? []) next.set(u.id, u.username);
          for (const u of change.left ?? []) next.delete(u.id);
          return next;
        });
        break;
      }
      case "typing": {
        const who = frame.user as { id: number; username: string };
        setTyping((current) => new Map(current).set(who.id, { name: who.username, until: Date.now() + 4000 }));
        break;
      }
    }
  }

  // Typing notices fade after four seconds.
  useEffect(() => {
    const timer = window.setInterval(() => {
      setTyping((current) => {
        const now = Date.now();
        const next = new Map([...current].filter(([, t]) => t.until > now));
        return next.size === current.size ? current : next;
      });
    }, 1000);
    return () => window.clearInterval(timer);
  }, []);

  // The newest message stays in view; the chat is marked read up to it while the page is seen.
  const newest = useMemo(() => {
    for (let i = shown.length - 1; i >= 0; i--) if (shown[i].state === "saved") return shown[i].message;
    return null;
  }, [shown]);
  useEffect(() => {
    list.current?.lastElementChild?.scrollIntoView({ block: "end" });
    if (newest && document.visibilityState === "visible" && newest.seq > (props.chat?.last_read_seq ?? 0)) {
      api.read(chatId, newest.seq).then(props.onRead, () => undefined);
    }
  }, [newest?.id]);

  async function loadOlder() {
    const first = shown.find((s) => s.state === "saved");
    if (!first) return;
    const page = await api.history(chatId, first.message.id);
    setOlder(page.length === 50);
    setShown((list) => page.reduce((acc, m) => mergeSaved(acc, m), list));
  }

  async function deliver(key: string, content: string, attachments: number[]) {
    try {
      const saved = await api.send(chatId, content, attachments);
      setShown((list) => mergeSaved(list, saved, key));
    } catch (err) {
      setShown((list) => list.map((s) => (s.key === key ? { ...s, state: "failed" } : s)));
      setError(err instanceof Error ? err.message : String(err));
    }
  }

  function send(content: string, attachments: Attachment[] = []) {
    const key = `local${Date.now()}${Math.random()}`;
    const message: Message = {
      id: Number.MAX_SAFE_INTEGER,
      chat: chatId,
      seq: 0,
      sender: user,
      content,
      timestamp: new Date().toISOString(),
      attachments,
    };
    setShown((list) => [...list, { key, message, state: "sending" }]);
    void deliver(key, content, attachments.map((a) => a.id));
  }

  function retry(item: Shown) {
    setShown((list) => list.map((s) => (s.key === item.key ? { ...s, state: "sending" } : s)));
    void deliver(item.key, item.message.content, (item.message.attachments ?? []).map((a) => a.id));
  }

  function submit(event: Event) {
    event.preventDefault();
    const content = draft.trim();
    if (!content) return;
    setDraft("");
    send(content);
  }

  async function attach(files: FileList | null) {
    if (!files || files.length === 0) return;
    setError(null);
    try {
      const uploaded: Attachment[] = [];
      for (const file of Array.from(files).slice(0, 10)) uploaded.push(await api.upload(chatId, file));
      send(draft.trim(), uploaded);
      setDraft("");
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  }

  function onDraft(value: string) {
    setDraft(value);
    const now = Date.now();
    if (value && now - lastTyping.current > 2000) {
      lastTyping.current = now;
      socket.current?.send({ type: "typing" });
    }
  }

  const typingNames = [...typing.entries()].filter(([id]) => id !== user.id).map(([, t]) => t.name);
  const others = [...online.entries()].filter(([id]) => id !== user.id).map(([, name]) => name);
  return (
    <section class="chat" aria-label={props.chat?.name ?? "Chat"}>
      <header>
        <button type="button" class="back" onClick={props.onBack} aria-label="Back to chats">
          ←
        </button>
        <h2>{props.chat?.name ?? `Chat ${chatId}`}</h2>
        <span class={`state ${state.kind}`} role="status">
          {state.kind === "live"
            ? others.length
              ? `Online: ${others.join(", ")}`
              : "Connected"
            : state.kind === "connecting"
              ? "Connecting…"
              : state.kind === "waiting"
                ? `Offline: reconnecting in ${Math.ceil(state.retryInMs / 1000)} s`
                : state.reason}
        </span>
      </header>
      {older && shown.length > 0 && (
        <button type="button" class="older" onClick={loadOlder}>
          Load older messages
        </button>
      )}
      <div class="messages" role="log" aria-live="polite" aria-label="Messages">
        <ol ref={list}>
          {shown.map((item) => (
            <MessageItem key={item.key} item={item} mine={item.message.sender.id === user.id} onRetry={retry} />
          ))}
        </ol>
      </div>
      <p class="typing" aria-live="polite">
        {typingNames.length ? `${typingNames.join(", ")} typing…` : ""}
      </p>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <form class="composer" onSubmit={submit}>
        <label class="visually-hidden" for="composer-text">
          Message
        </label>
        <textarea
          id="composer-text"
          name="message"
          rows={2}
          value={draft}
          disabled={state.kind === "ended"}
          onInput={(e) => onDraft(e.currentTarget.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey) submit(e);
          }}
        />
        <label class="file">
          <span class="visually-hidden">Attach files</span>📎
          <input type="file" multiple onChange={(e) => attach(e.currentTarget.files)} />
        </label>
        <button type="submit" disabled={state.kind === "ended"}>
          Send
        </button>
      </form>
    </section>
  );
}

function MessageItem({ item, mine, onRetry }: { item: Shown; mine: boolean; onRetry: (item: Shown) => void }) {
  const m = item.message;
  const time = new Date(m.timestamp);
  return (
    <li class={`message ${mine ? "mine" : ""} ${item.state}`} data-id={item.state === "saved" ? m.id : undefined}>
      <div class="meta">
        <span class="sender">{m.sender.username}</span>{" "}
        <time dateTime={m.timestamp}>{time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}</time>
        {m.edited_at && <span class="edited"> (edited)</span>}
      </div>
      {m.deleted ? <p class="deleted">This message was deleted.</p> : m.content && <p class="content">{m.content}</p>}
      {(m.attachments ?? []).length > 0 && (
        <ul class="attachments">
          {(m.attachments ?? []).map((a) => (
            <li key={a.id}>
              <a href={a.url} target="_blank" rel="noopener">
                {a.thumbnail_url ? (
                  <img src={a.thumbnail_url} alt={a.name} width={a.width && a.width < 400 ? a.width : undefined} />
                ) : (
                  a.name
                )}
              </a>
            </li>
          ))}
        </ul>
      )}
      {item.state === "sending" && <span class="note">Sending…</span>}
      {item.state === "failed" && (
        <span class="note">
          Not sent.{" "}
          <button type="button" class="link" onClick={() => onRetry(item)}>
            Retry
          </button>
        </span>
      )}
    </li>
  );
}

render(<App />, document.getElementById("app")!);
