// The REST API as the web client uses it: same-origin requests with the session cookie, and the
// CSRF token (the `csrftoken` cookie) repeated in `X-CSRFToken` on every write, as the server
// requires of cookie-authenticated clients.

export interface User {
  id: number;
  username: string;
  email: string;
  user_type: string;
}

export interface Member {
  id: number;
  username: string;
}

export interface Attachment {
  id: number;
  name: string;
  size: number;
  content_type: string;
  width?: number;
  height?: number;
  url: string;
  thumbnail_url?: string;
}

export interface Reaction {
  emoji: string;
  count: number;
  me: boolean;
}

export interface ReplyPreview {
  id: number;
  sender: Member;
  excerpt: string;
  deleted?: boolean;
}

export interface Message {
  id: number;
  chat: number;
  seq: number;
  sender: User;
  content: string;
  timestamp: string;
  edited_at?: string;
  deleted?: boolean;
  reply_to?: ReplyPreview;
  reactions?: Reaction[];
  mentions?: number[];
  attachments?: Attachment[];
}

export interface Pin {
  message: Message;
  pinned_at: string;
  pinned_by: Member | null;
}

export interface SearchHit {
  message: Message;
  /** HTML-escaped text with the matches in `<mark>`. */
  snippet: string;
}

export interface AiChat {
  id: number;
  title: string;
  system_prompt: string;
  related_chat: number | null;
  related_chat_name: string | null;
  created_at: string;
  updated_at: string;
  messages: AiMessage[];
  /** The model it asks, an id of `GET /api/ai/models/`. */
  model?: string | null;
}

export interface AiModel {
  id: string;
  provider: string;
  model: string;
  context_window: number;
  default: boolean;
}

export interface AiMessage {
  id: number;
  role: "user" | "assistant" | "system";
  content: string;
  timestamp: string;
  prompt_tokens?: number | null;
  completion_tokens?: number | null;
  total_tokens?: number | null;
  usage_estimated?: boolean;
  finish_reason?: string | null;
  /** The message it follows; alternatives share it. */
  parent?: number | null;
  /** Every alternative at its place, itself included, oldest first. */
  siblings?: number[];
}

export interface Chat {
  id: number;
  name: string;
  /** The owner's user id (none for a direct chat). */
  owner: number | null;
  participants: User[];
  messages: Message[];
  created_at: string;
  last_read_seq: number;
  unread_count: number;
  unread_mentions: number;
  direct: boolean;
}

/** An answer other than 2xx, with the server's reason. */
export class ApiError extends Error {
  constructor(
    public status: number,
    public body: unknown,
  ) {
    super(reason(body) ?? `HTTP ${status}`);
  }
}

/** The first message of an error body: `{"detail"}`, `{"error"}` or field errors. */
function reason(body: unknown): string | undefined {
  if (!body || typeof body !== "object") return undefined;
  const b = body as Record<string, unknown>;
  if (typeof b.detail === "string") return b.detail;
  if (typeof b.error === "string") return b.error;
  for (const [field, messages] of Object.entries(b)) {
    if (Array.isArray(messages) && typeof messages[0] === "string") {
      return field === "non_field_errors" ? messages[0] : `${field}: ${messages[0]}`;
    }
  }
  return undefined;
}

function csrfToken(): string | undefined {
  return document.cookie
    .split("; ")
    .find((c) => c.startsWith("csrftoken="))
    ?.slice("csrftoken=".length);
}

/** One request; JSON in and out. Throws `ApiError` for an answer other than 2xx. */
export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  return (await exchange<T>(method, path, body)).body;
}

/** A page of a list and the path of the next one (its `Link: <…>; rel="next"` header). */
export interface Page<T> {
  items: T[];
  next: string | null;
}

async function page<T>(path: string): Promise<Page<T>> {
  const { body, headers } = await exchange<T[]>("GET", path);
  const link = headers.get("Link") ?? "";
  const match = /<([^>]+)>;\s*rel="next"/.exec(link);
  let next: string | null = null;
  if (match) {
    const url = new URL(match[1], location.origin);
    next = url.pathname + url.search;
  }
  return { items: body, next };
}

/** Every item of a list, following its pages (at most `maxPages`). */
async function all<T>(path: string, maxPages = 20): Promise<T[]> {
  const items: T[] = [];
  let next: string | null = path;
  for (let i = 0; next && i < maxPages; i++) {
    const got: Page<T> = await page<T>(next);
    items.push(...got.items);
    next = got.next;
  }
  return items;
}

async function exchange<T>(method: string, path: string, body?: unknown): Promise<{ body: T; headers: Headers }> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (method !== "GET") {
    const token = csrfToken();
    if (token) headers["X-CSRFToken"] = token;
  }
  let payload: BodyInit | undefined;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  const text = await response.text();
  const parsed: unknown = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, parsed);
  return { body: parsed as T, headers: response.headers };
}

export const api = {
  me: () => request<User>("GET", "/api/me/"),
  login: (username: string, password: string) =>
    request<User>("POST", "/api/login/", { username, password }),
  register: (username: string, password: string) =>
    request<User>("POST", "/api/register/", { username, password, password_confirm: password }),
  logout: () => request<unknown>("POST", "/api/logout/"),
  chats: () => all<Chat>("/api/chats/"),
  chat: (id: number) => request<Chat>("GET", `/api/chats/${id}/`),
  createChat: (name: string, usernames: string[]) =>
    request<Chat>("POST", "/api/chats/", { name, participant_usernames: usernames }),
  /** A page of history: the newest `limit` before message id `before` (or the newest); `next`
   * is set when older messages remain. */
  history: (chat: number, before?: number, limit = 50) =>
    page<Message>(`/api/chats/${chat}/messages/?limit=${limit}${before ? `&before=${before}` : ""}`),
  message: (id: number) => request<Message>("GET", `/api/messages/${id}/`),
  send: (chat: number, content: string, attachments: number[] = []) =>
    request<Message>("POST", `/api/chats/${chat}/send_message/`, { content, attachments }),
  read: (chat: number, seq: number) => request<unknown>("POST", `/api/chats/${chat}/read/`, { seq }),
  send_reply: (chat: number, content: string, reply_to: number, attachments: number[] = []) =>
    request<Message>("POST", `/api/chats/${chat}/send_message/`, { content, reply_to, attachments }),
  edit: (chat: number, id: number, content: string) =>
    request<Message>("PATCH", `/api/chats/${chat}/messages/${id}/`, { content }),
  remove: (chat: number, id: number) => request<Message>("DELETE", `/api/chats/${chat}/messages/${id}/`),
  react: (chat: number, id: number, emoji: string, on: boolean) =>
    request<unknown>(on ? "POST" : "DELETE", `/api/chats/${chat}/messages/${id}/reactions/`, { emoji }),
  pins: (chat: number) => request<Pin[]>("GET", `/api/chats/${chat}/pins/`),
  pin: (chat: number, id: number, on: boolean) =>
    request<unknown>(on ? "POST" : "DELETE", `/api/chats/${chat}/messages/${id}/pin/`),
  addMembers: (chat: number, usernames: string[]) =>
    request<Chat>("POST", `/api/chats/${chat}/participants/`, { participant_usernames: usernames }),
  removeMember: (chat: number, user: number) =>
    request<unknown>("DELETE", `/api/chats/${chat}/participants/${user}/`),
  leave: (chat: number) => request<unknown>("POST", `/api/chats/${chat}/leave/`),
  direct: (username: string) => request<Chat>("POST", "/api/direct/", { username }),
  search: (q: string) => request<SearchHit[]>("GET", `/api/search/?q=${encodeURIComponent(q)}`),
  aiChats: () => all<AiChat>("/api/ai/chats/"),
  aiChat: (id: number) => request<AiChat>("GET", `/api/ai/chats/${id}/`),
  aiModels: () => request<AiModel[]>("GET", "/api/ai/models/"),
  setAiModel: (id: number, model: string) => request<AiChat>("PATCH", `/api/ai/chats/${id}/`, { model }),
  /** A new AI conversation; a blank system prompt is left out (the server's default applies). */
  createAiChat: (title: string, system_prompt: string, related_chat: number | null) =>
    request<AiChat>("POST", "/api/ai/chats/", {
      title,
      related_chat,
      ...(system_prompt.trim() ? { system_prompt } : {}),
    }),
  upload: (chat: number, file: File) => {
    const form = new FormData();
    form.append("file", file, file.name);
    return request<Attachment>("POST", `/api/chats/${chat}/attachments/`, form);
  },
};
