// The chat socket in the richer protocol (`mrm.v2`), kept open: it reconnects on its own with
// jittered exponential backoff and resumes from the last position it saw (`after_seq`), so a
// server restart or a network drop loses, duplicates and reorders nothing. Ended credentials,
// a removal and a deleted chat stop it with a reason instead of looping.

export interface Frame {
  type: string;
  seq?: number;
  [key: string]: unknown;
}

export type SocketState =
  | { kind: "connecting" }
  | { kind: "live" }
  | { kind: "waiting"; retryInMs: number }
  | { kind: "ended"; reason: string };

/** Close codes after which reconnecting cannot help (see the server's README). */
const FINAL: Record<number, string> = {
  4001: "Your session ended. Log in again.",
  4003: "You are no longer a member of this chat.",
  4004: "This chat was deleted.",
};

export class ChatSocket {
  private socket?: WebSocket;
  private attempt = 0;
  private timer?: number;
  private stopped = false;

  constructor(
    private chatId: number,
    /** The newest position the caller has; frames after it are replayed on connect. */
    private lastSeq: number,
    private onFrame: (frame: Frame) => void,
    private onState: (state: SocketState) => void,
  ) {}

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) window.clearTimeout(this.timer);
    this.socket?.close(1000);
    this.socket = undefined;
  }

  /** Sends a frame if the socket is open; false otherwise. */
  send(frame: object): boolean {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  private connect(): void {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/ws/chat/${this.chatId}/?after_seq=${this.lastSeq}`;
    this.onState({ kind: "connecting" });
    const socket = new WebSocket(url, ["mrm.v2"]);
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.onState({ kind: "live" });
    };
    socket.onmessage = (event) => {
      let frame: Frame;
      try {
        frame = JSON.parse(String(event.data)) as Frame;
      } catch {
        return;
      }
      const seq =
        frame.type === "message"
          ? (frame.message as { seq?: number } | undefined)?.seq
          : typeof frame.seq === "number"
            ? frame.seq
            : undefined;
      if (seq !== undefined) {
        // A position already seen (a replay overlapping what the page holds) is skipped.
        if (seq <= this.lastSeq) return;
        this.lastSeq = seq;
      }
      this.onFrame(frame);
    };
    socket.onclose = async (event) => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = undefined;
      let final = FINAL[event.code];
      // A handshake refused before the upgrade (an ended session answers 403 there) closes as
      // 1006 like a network loss: after a few, ask whether the session still holds.
      if (!final && this.attempt >= 2 && (await sessionEnded())) final = FINAL[4001];
      if (this.stopped) return;
      if (final) {
        this.onState({ kind: "ended", reason: final });
        return;
      }
      // 0.5 s, 1 s, 2 s … up to 15 s, each ±50 %, so clients do not come back all at once.
      const base = Math.min(15_000, 500 * 2 ** this.attempt);
      const wait = Math.round(base * (0.5 + Math.random()));
      this.attempt += 1;
      this.onState({ kind: "waiting", retryInMs: wait });
      this.timer = window.setTimeout(() => this.connect(), wait);
    };
  }
}

/** Whether the server no longer knows this page's session (403 on `/api/me/`); a network
 * failure is not an answer. */
async function sessionEnded(): Promise<boolean> {
  try {
    const answer = await fetch("/api/me/", { credentials: "same-origin" });
    return answer.status === 401 || answer.status === 403;
  } catch {
    return false;
  }
}
