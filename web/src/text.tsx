// Small pieces of presentation shared by the views.

import type { JSX } from "preact";

const ENTITIES: Record<string, string> = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&#x27;": "'" };

/** A search snippet (HTML-escaped text with matches in `<mark>`) as elements, never as HTML. */
export function Snippet({ html }: { html: string }): JSX.Element {
  const parts = html.split(/<\/?mark>/);
  const unescape = (t: string) => t.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (e) => ENTITIES[e] ?? e);
  return <span>{parts.map((part, i) => (i % 2 === 1 ? <mark key={i}>{unescape(part)}</mark> : unescape(part)))}</span>;
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
