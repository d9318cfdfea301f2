// mrm-chat's web client: sign in, the chat list, a chat with live history, search, and AI
// conversations. It speaks only the public REST API and the `mrm.v2` sockets, so it is also a
// reference for other clients.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { AiList, AiView } from "./ai";
import { api, ApiError, type AiChat, type Chat, type SearchHit, type User } from "./api";
import { ChatView } from "./chat";
import { errorText, Snippet } from "./text";

/** What the page shows beside the lists: a chat, an AI conversation, or nothing. */
type Route = { kind: "none" } | { kind: "chat"; id: number } | { kind: "ai"; id: number };

function routeFromHash(): Route {
  const match = /^#\/(chats|ai)\/(\d+)$/.exec(location.hash);
  if (!match) return { kind: "none" };
  return { kind: match[1] === "chats" ? "chat" : "ai", id: Number(match[2]) };
}

function useRoute(): Route {
  const [route, setRoute] = useState(routeFromHash());
  useEffect(() => {
    const changed = () => setRoute(routeFromHash());
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return route;
}

function go(path: string) {
  location.hash = path;
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
      setError(errorText(err));
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
  const [aiChats, setAiChats] = useState<AiChat[]>([]);
  const route = useRoute();
  const [error, setError] = useState<string | null>(null);
  const refresh = () =>
    Promise.all([api.chats(), api.aiChats()]).then(
      ([list, ai]) => {
        setChats([...list].sort((a, b) => lastActivity(b).localeCompare(lastActivity(a))));
        setAiChats(ai);
      },
      (err) => (err instanceof ApiError && err.status === 403 ? onSignedOut() : setError(errorText(err))),
    );
  useEffect(() => {
    void refresh();
    const timer = window.setInterval(refresh, 15_000);
    return () => window.clearInterval(timer);
  }, []);
  async function logout() {
    await api.logout().catch(() => undefined);
    onSignedOut();
  }
  const current = route.kind === "chat" ? (chats.find((c) => c.id === route.id) ?? null) : null;
  return (
    <div class={`home ${route.kind === "none" ? "list-open" : "chat-open"}`}>
      <nav class="sidebar" aria-label="Chats">
        <header>
          <span class="me">{user.username}</span>
          <button type="button" onClick={logout}>
            Log out
          </button>
        </header>
        <Search />
        <NewChat onCreated={(chat) => refresh().then(() => go(`/chats/${chat.id}`))} />
        <Direct onOpened={(chat) => refresh().then(() => go(`/chats/${chat.id}`))} />
        {error && <p class="error">{error}</p>}
        <h2 class="list-title">Chats</h2>
        <ul class="chats">
          {chats.map((chat) => (
            <li key={chat.id}>
              <a
                href={`#/chats/${chat.id}`}
                aria-current={route.kind === "chat" && chat.id === route.id ? "page" : undefined}
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
        <AiList
          chats={aiChats}
          groups={chats}
          current={route.kind === "ai" ? route.id : null}
          onCreated={(chat) => refresh().then(() => go(`/ai/${chat.id}`))}
        />
      </nav>
      {route.kind === "chat" && (
        <ChatView
          key={`chat${route.id}`}
          chatId={route.id}
          chat={current}
          user={user}
          onBack={() => go("")}
          onChanged={() => void refresh()}
        />
      )}
      {route.kind === "ai" && (
        <AiView key={`ai${route.id}`} chatId={route.id} onBack={() => go("")} onChanged={() => void refresh()} />
      )}
    </div>
  );
}

function Search() {
  const [q, setQ] = useState("");
  const [hits, setHits] = useState<SearchHit[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    if (!q.trim()) return setHits(null);
    try {
      setHits(await api.search(q));
    } catch (err) {
      setError(errorText(err));
    }
  }
  return (
    <div class="search">
      <form role="search" onSubmit={submit}>
        <label class="visually-hidden" for="search-q">
          Search messages
        </label>
        <input id="search-q" type="search" placeholder="Search messages" value={q} onInput={(e) => setQ(e.currentTarget.value)} />
      </form>
      {error && <p class="error">{error}</p>}
      {hits && (
        <section aria-label="Search results">
          {hits.length === 0 && <p class="muted">No messages match.</p>}
          <ul class="hits">
            {hits.map((hit) => (
              <li key={hit.message.id}>
                <a href={`#/chats/${hit.message.chat}`} onClick={() => setHits(null)}>
                  <span class="sender">{hit.message.sender.username}</span>: <Snippet html={hit.snippet} />
                </a>
              </li>
            ))}
          </ul>
        </section>
      )}
    </div>
  );
}

function Direct({ onOpened }: { onOpened: (chat: Chat) => void }) {
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);
  async function submit(event: Event) {
    event.preventDefault();
    setError(null);
    try {
      const chat = await api.direct(name.trim());
      setName("");
      onOpened(chat);
    } catch (err) {
      setError(errorText(err));
    }
  }
  return (
    <form class="direct" onSubmit={submit}>
      <label>
        Message a user
        <input name="direct-user" placeholder="username" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <button type="submit">Open</button>
      {error && <p class="error">{error}</p>}
    </form>
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
      setError(errorText(err));
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

render(<App />, document.getElementById("app")!);
