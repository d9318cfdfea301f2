// One group or direct chat: its history, live over the `mrm.v2` socket; sending (optimistic,
// with retry), replies, edits, deletions, reactions, pins, members, attachments, typing and
// presence.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, type Attachment, type Chat, type Message, type Pin, type User } from "./api";
import { ChatSocket, type Frame, type SocketState } from "./socket";
import { errorText } from "./text";

/** A message as the page shows it: saved, or sent and not yet confirmed, or failed. */
interface Shown {
  key: string;
  message: Message;
  state: "saved" | "sending" | "failed";
  /** For a failed send: what to send again. */
  replyTo?: number;
}

/** Quick reactions offered on every message. */
const QUICK = ["👍", "❤️", "😂"];
const PAGE = 50;

/** `list` with `message` saved in its place (by id), replacing the unconfirmed item `replacing`
 * if given, whose key it keeps so that the element (and what a screen reader announced) stays. */
function mergeSaved(list: Shown[], message: Message, replacing?: string): Shown[] {
  const previous = list.find((s) => s.state === "saved" && s.message.id === message.id);
  const without = list.filter((s) => s.key !== replacing && s !== previous);
  const key = replacing ?? previous?.key ?? `m${message.id}`;
  const shown: Shown = { key, message, state: "saved" };
  // Saved messages in id order (ids grow with seq within a chat), unconfirmed ones last.
  const saved = without.filter((s) => s.state === "saved");
  const pending = without.filter((s) => s.state !== "saved");
  const at = saved.findIndex((s) => s.message.id > message.id);
  if (at === -1) saved.push(shown);
  else saved.splice(at, 0, shown);
  return [...saved, ...pending];
}

/** The key of the oldest unconfirmed item that `message` (one of ours, saved) is: same text,
 * same reply target, same files. A failed send the server saved anyway is thus not shown twice. */
function unconfirmedCopy(list: Shown[], message: Message): string | undefined {
  const files = (m: Message) => (m.attachments ?? []).map((a) => a.id).join(",");
  return list.find(
    (s) =>
      s.state !== "saved" &&
      s.message.content === message.content &&
      (s.replyTo ?? null) === (message.reply_to?.id ?? null) &&
      files(s.message) === files(message),
  )?.key;
}

function updateMessage(list: Shown[], id: unknown, change: (m: Message) => Message): Shown[] {
  return list.map((s) => (s.state === "saved" && s.message.id === id ? { ...s, message: change(s.message) } : s));
}

export function ChatView(props: {
  chatId: number;
  chat: Chat | null;
  user: User;
  onBack: () => void;
  onChanged: () => void;
}) {
  const { chatId, user } = props;
  const [shown, setShown] = useState<Shown[]>([]);
  const [older, setOlder] = useState(false);
  const [state, setState] = useState<SocketState>({ kind: "connecting" });
  const [online, setOnline] = useState<Map<number, string>>(new Map());
  const [typing, setTyping] = useState<Map<number, { name: string; until: number }>>(new Map());
  const [draft, setDraft] = useState("");
  const [replyTo, setReplyTo] = useState<Message | null>(null);
  const [editing, setEditing] = useState<number | null>(null);
  const [panel, setPanel] = useState<"none" | "pins" | "members">("none");
  const [pinsVersion, setPinsVersion] = useState(0);
  const [loading, setLoading] = useState(true);
  const [loadAttempt, setLoadAttempt] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const socket = useRef<ChatSocket | null>(null);
  const list = useRef<HTMLOListElement>(null);
  const scroller = useRef<HTMLDivElement>(null);
  const lastTyping = useRef(0);
  const readUpTo = useRef(props.chat?.last_read_seq ?? 0);

  useEffect(() => {
    let cancelled = false;
    setLoading(true);
    api.history(chatId, undefined, PAGE).then(
      (page) => {
        if (cancelled) return;
        setShown(page.items.map((message) => ({ key: `m${message.id}`, message, state: "saved" })));
        setOlder(page.next !== null);
        setLoading(false);
        const lastSeq = page.items.length ? page.items[page.items.length - 1].seq : 0;
        const live = new ChatSocket(chatId, lastSeq, onFrame, setState);
        socket.current = live;
        live.start();
      },
      (err) => {
        if (cancelled) return;
        setLoading(false);
        setError(errorText(err));
      },
    );
    return () => {
      cancelled = true;
      socket.current?.stop();
      socket.current = null;
    };
  }, [chatId, loadAttempt]);

  function onFrame(frame: Frame) {
    switch (frame.type) {
      case "message": {
        const message = frame.message as Message;
        setShown((list) =>
          mergeSaved(list, message, message.sender.id === user.id ? unconfirmedCopy(list, message) : undefined),
        );
        break;
      }
      case "message_edited":
        setShown((list) =>
          updateMessage(list, frame.id, (m) => ({ ...m, content: String(frame.content), edited_at: String(frame.edited_at) })),
        );
        break;
      case "message_deleted":
        setShown((list) =>
          updateMessage(list, frame.id, (m) => ({ ...m, content: "", deleted: true, attachments: [], reactions: [] })),
        );
        break;
      case "reaction_added":
      case "reaction_removed": {
        // The counts are read again rather than stepped: a resuming socket may replay a change
        // the history page already counted.
        const id = Number(frame.id);
        api.message(id).then(
          (fresh) => setShown((list) => updateMessage(list, id, () => fresh)),
          () => undefined,
        );
        break;
      }
      case "message_pinned":
      case "message_unpinned":
        setPinsVersion((v) => v + 1);
        break;
      case "member_added":
      case "member_removed":
      case "member_left":
      case "owner_changed":
      case "chat_renamed":
        props.onChanged();
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

  // The newest message stays in view (unless the reader has scrolled up into history), and the
  // chat is marked read up to it while the page is seen: at most once a second, moving the mark
  // only once the server took it, and again when the page comes back into view.
  const newest = useMemo(() => {
    for (let i = shown.length - 1; i >= 0; i--) if (shown[i].state === "saved") return shown[i].message;
    return null;
  }, [shown]);
  const readTimer = useRef<number | undefined>(undefined);
  function markRead() {
    if (readTimer.current !== undefined) return;
    readTimer.current = window.setTimeout(() => {
      readTimer.current = undefined;
      const seq = newestSeq.current;
      if (document.visibilityState !== "visible" || seq <= readUpTo.current) return;
      api.read(chatId, seq).then(() => {
        readUpTo.current = Math.max(readUpTo.current, seq);
        props.onChanged();
      }, () => undefined);
    }, 1000);
  }
  const newestSeq = useRef(0);
  useEffect(() => {
    const box = scroller.current;
    const nearBottom = !box || box.scrollHeight - box.scrollTop - box.clientHeight < 120;
    if (nearBottom) list.current?.lastElementChild?.scrollIntoView({ block: "end" });
    newestSeq.current = newest?.seq ?? 0;
    markRead();
  }, [newest?.id]);
  useEffect(() => {
    const visible = () => document.visibilityState === "visible" && markRead();
    document.addEventListener("visibilitychange", visible);
    return () => {
      document.removeEventListener("visibilitychange", visible);
      if (readTimer.current !== undefined) window.clearTimeout(readTimer.current);
    };
  }, []);

  async function loadOlder() {
    const first = shown.find((s) => s.state === "saved");
    if (!first) return;
    try {
      const page = await api.history(chatId, first.message.id, PAGE);
      setOlder(page.next !== null);
      setShown((list) => page.items.reduce((acc, m) => mergeSaved(acc, m), list));
    } catch (err) {
      setError(errorText(err));
    }
  }

  async function deliver(key: string, content: string, attachments: number[], reply?: number) {
    try {
      const saved =
        reply === undefined
          ? await api.send(chatId, content, attachments)
          : await api.send_reply(chatId, content, reply, attachments);
      setShown((list) => mergeSaved(list, saved, key));
    } catch (err) {
      setShown((list) => list.map((s) => (s.key === key ? { ...s, state: "failed" } : s)));
      setError(errorText(err));
    }
  }

  function send(content: string, attachments: Attachment[] = []) {
    const key = `local${Date.now()}${Math.random()}`;
    const reply = replyTo ?? undefined;
    const message: Message = {
      id: Number.MAX_SAFE_INTEGER,
      chat: chatId,
      seq: 0,
      sender: user,
      content,
      timestamp: new Date().toISOString(),
      attachments,
      reply_to: reply && { id: reply.id, sender: reply.sender, excerpt: reply.content.slice(0, 100) },
    };
    setReplyTo(null);
    setShown((list) => [...list, { key, message, state: "sending", replyTo: reply?.id }]);
    void deliver(key, content, attachments.map((a) => a.id), reply?.id);
  }

  function retry(item: Shown) {
    setShown((list) => list.map((s) => (s.key === item.key ? { ...s, state: "sending" } : s)));
    void deliver(item.key, item.message.content, (item.message.attachments ?? []).map((a) => a.id), item.replyTo);
  }

  function submit(event: Event) {
    event.preventDefault();
    const content = draft.trim();
    if (!content) return;
    setDraft("");
    send(content);
  }

  async function attach(files: FileList | File[] | null) {
    if (!files || files.length === 0) return;
    setError(null);
    try {
      const uploaded: Attachment[] = [];
      for (const file of Array.from(files).slice(0, 10)) uploaded.push(await api.upload(chatId, file));
      // The files go as a message of their own: what was typed meanwhile stays in the box.
      send("", uploaded);
    } catch (err) {
      setError(errorText(err));
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

  async function act(work: () => Promise<unknown>) {
    setError(null);
    try {
      await work();
    } catch (err) {
      setError(errorText(err));
    }
  }

  const typingNames = [...typing.entries()].filter(([id]) => id !== user.id).map(([, t]) => t.name);
  const others = [...online.entries()].filter(([id]) => id !== user.id).map(([, name]) => name);
  const ended = state.kind === "ended";
  return (
    <section
      class="chat"
      aria-label={props.chat?.name ?? "Chat"}
      onDragOver={(e) => e.preventDefault()}
      onDrop={(e) => {
        e.preventDefault();
        void attach(e.dataTransfer?.files ?? null);
      }}
    >
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
        <button type="button" class="secondary" aria-pressed={panel === "pins"} onClick={() => setPanel(panel === "pins" ? "none" : "pins")}>
          Pins
        </button>
        <button type="button" class="secondary" aria-pressed={panel === "members"} onClick={() => setPanel(panel === "members" ? "none" : "members")}>
          Members
        </button>
      </header>
      {panel === "pins" && <Pins chatId={chatId} version={pinsVersion} />}
      {panel === "members" && props.chat && <Members chat={props.chat} user={user} onChanged={props.onChanged} onLeft={props.onBack} />}
      {older && (
        <button type="button" class="older" onClick={loadOlder}>
          Load older messages
        </button>
      )}
      <div
        class="messages"
        ref={scroller}
        role="log"
        aria-live="polite"
        aria-relevant="additions"
        aria-busy={loading}
        tabIndex={0}
        aria-label="Messages"
      >
        <ol ref={list}>
          {shown.map((item) => (
            <MessageItem
              key={item.key}
              item={item}
              mine={item.message.sender.id === user.id}
              editing={editing === item.message.id && item.state === "saved"}
              onRetry={retry}
              onReply={() => setReplyTo(item.message)}
              onEdit={() => setEditing(item.message.id)}
              onEdited={(content) =>
                act(async () => {
                  await api.edit(chatId, item.message.id, content);
                  setEditing(null);
                })
              }
              onCancelEdit={() => setEditing(null)}
              onDelete={() => act(() => api.remove(chatId, item.message.id))}
              onReact={(emoji, on) => act(() => api.react(chatId, item.message.id, emoji, on))}
              onPin={() =>
                act(async () => {
                  await api.pin(chatId, item.message.id, true);
                  setPinsVersion((v) => v + 1);
                })
              }
            />
          ))}
        </ol>
      </div>
      <p class="typing" aria-live="polite">
        {typingNames.length ? `${typingNames.join(", ")} typing…` : ""}
      </p>
      {error && (
        <p class="error" role="alert">
          {error}{" "}
          {shown.length === 0 && !loading && (
            <button
              type="button"
              class="link"
              onClick={() => {
                setError(null);
                setLoadAttempt((n) => n + 1);
              }}
            >
              Try again
            </button>
          )}
        </p>
      )}
      {replyTo && (
        <p class="replying">
          Replying to {replyTo.sender.username}: “{replyTo.content.slice(0, 80)}”{" "}
          <button type="button" class="link" onClick={() => setReplyTo(null)}>
            Cancel reply
          </button>
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
          disabled={ended}
          onInput={(e) => onDraft(e.currentTarget.value)}
          onPaste={(e) => {
            const files = e.clipboardData?.files;
            if (files && files.length > 0) {
              e.preventDefault();
              void attach(files);
            }
          }}
          onKeyDown={(e) => {
            // Enter while an input method composes confirms the composition, not the message.
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e);
          }}
        />
        <label class="file">
          <span class="visually-hidden">Attach files</span>📎
          <input type="file" multiple disabled={ended} onChange={(e) => attach(e.currentTarget.files)} />
        </label>
        <button type="submit" disabled={ended}>
          Send
        </button>
      </form>
    </section>
  );
}

function MessageItem(props: {
  item: Shown;
  mine: boolean;
  editing: boolean;
  onRetry: (item: Shown) => void;
  onReply: () => void;
  onEdit: () => void;
  onEdited: (content: string) => void;
  onCancelEdit: () => void;
  onDelete: () => void;
  onReact: (emoji: string, on: boolean) => void;
  onPin: () => void;
}) {
  const { item, mine } = props;
  const m = item.message;
  const [text, setText] = useState(m.content);
  const time = new Date(m.timestamp);
  const saved = item.state === "saved" && !m.deleted;
  return (
    <li
      id={`message-${item.key}`}
      class={`message ${mine ? "mine" : ""} ${item.state}`}
      data-id={item.state === "saved" ? m.id : undefined}
    >
      <div class="meta">
        <span class="sender">{m.sender.username}</span>{" "}
        <time dateTime={m.timestamp}>{time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}</time>
        {m.edited_at && !m.deleted && <span class="edited"> (edited)</span>}
      </div>
      {m.reply_to && (
        <blockquote class="reply-preview">
          {m.reply_to.sender.username}: {m.reply_to.deleted ? "(deleted)" : m.reply_to.excerpt}
        </blockquote>
      )}
      {props.editing ? (
        <form
          class="edit"
          onSubmit={(e) => {
            e.preventDefault();
            props.onEdited(text.trim());
          }}
        >
          <label class="visually-hidden" for={`edit-${m.id}`}>
            Edit message
          </label>
          <textarea id={`edit-${m.id}`} value={text} onInput={(e) => setText(e.currentTarget.value)} />
          <button type="submit">Save</button>{" "}
          <button type="button" class="link" onClick={props.onCancelEdit}>
            Cancel
          </button>
        </form>
      ) : m.deleted ? (
        <p class="deleted">This message was deleted.</p>
      ) : (
        m.content && <p class="content">{m.content}</p>
      )}
      {(m.attachments ?? []).length > 0 && (
        <ul class="attachments">
          {(m.attachments ?? []).map((a) => (
            <li key={a.id}>
              <a href={a.url} target="_blank" rel="noopener">
                {a.thumbnail_url ? <img src={a.thumbnail_url} alt={a.name} /> : `📄 ${a.name}`}
              </a>
            </li>
          ))}
        </ul>
      )}
      {(m.reactions ?? []).length > 0 && (
        <ul class="reactions" aria-label="Reactions">
          {(m.reactions ?? []).map((r) => (
            <li key={r.emoji}>
              <button
                type="button"
                class={`chip ${r.me ? "me" : ""}`}
                aria-pressed={r.me}
                aria-label={`${r.emoji} ${r.count}`}
                onClick={() => props.onReact(r.emoji, !r.me)}
              >
                {r.emoji} {r.count}
              </button>
            </li>
          ))}
        </ul>
      )}
      {saved && !props.editing && (
        <div class="actions" role="group" aria-label={`Actions on ${m.sender.username}'s message: ${m.content.slice(0, 40)}`}>
          <button type="button" class="link" onClick={props.onReply}>
            Reply
          </button>
          {QUICK.map((emoji) => (
            <button
              key={emoji}
              type="button"
              class="link"
              aria-label={`React ${emoji}`}
              onClick={() => props.onReact(emoji, !(m.reactions ?? []).some((r) => r.emoji === emoji && r.me))}
            >
              {emoji}
            </button>
          ))}
          <button type="button" class="link" onClick={props.onPin}>
            Pin
          </button>
          {mine && (
            <>
              <button
                type="button"
                class="link"
                onClick={() => {
                  setText(m.content);
                  props.onEdit();
                }}
              >
                Edit
              </button>
              <button type="button" class="link danger" onClick={props.onDelete}>
                Delete
              </button>
            </>
          )}
        </div>
      )}
      {item.state === "sending" && <span class="note">Sending…</span>}
      {item.state === "failed" && (
        <span class="note">
          Not sent.{" "}
          <button type="button" class="link" onClick={() => props.onRetry(item)}>
            Retry
          </button>
        </span>
      )}
    </li>
  );
}

function Pins({ chatId, version }: { chatId: number; version: number }) {
  const [pins, setPins] = useState<Pin[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = () => api.pins(chatId).then(setPins, (err) => setError(errorText(err)));
  useEffect(() => {
    void load();
  }, [chatId, version]);
  return (
    <aside class="panel" aria-label="Pinned messages">
      <h3>Pinned</h3>
      {error && <p class="error">{error}</p>}
      {pins && pins.length === 0 && <p class="muted">Nothing is pinned.</p>}
      <ul>
        {(pins ?? []).map((p) => (
          <li key={p.message.id}>
            <strong>{p.message.sender.username}</strong>: {p.message.content}{" "}
            <button
              type="button"
              class="link"
              onClick={() => api.pin(chatId, p.message.id, false).then(load, (err) => setError(errorText(err)))}
            >
              Unpin
            </button>
          </li>
        ))}
      </ul>
    </aside>
  );
}

function Members(props: { chat: Chat; user: User; onChanged: () => void; onLeft: () => void }) {
  const { chat, user } = props;
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);
  const owner = chat.owner === user.id;
  async function act(work: () => Promise<unknown>) {
    setError(null);
    try {
      await work();
      props.onChanged();
    } catch (err) {
      setError(errorText(err));
    }
  }
  return (
    <aside class="panel" aria-label="Members">
      <h3>Members</h3>
      <ul>
        {chat.participants.map((p) => (
          <li key={p.id}>
            {p.username}
            {chat.owner === p.id && " (owner)"}
            {owner && p.id !== user.id && !chat.direct && (
              <>
                {" "}
                <button type="button" class="link danger" onClick={() => act(() => api.removeMember(chat.id, p.id))}>
                  Remove
                </button>
              </>
            )}
          </li>
        ))}
      </ul>
      {owner && !chat.direct && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void act(async () => {
              await api.addMembers(chat.id, [name.trim()]);
              setName("");
            });
          }}
        >
          <label>
            Add a member
            <input name="member" placeholder="username" value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </label>
          <button type="submit">Add</button>
        </form>
      )}
      {!chat.direct && (
        <button
          type="button"
          class="danger"
          onClick={() =>
            act(async () => {
              await api.leave(chat.id);
              props.onLeft();
            })
          }
        >
          Leave chat
        </button>
      )}
      {error && <p class="error">{error}</p>}
    </aside>
  );
}
