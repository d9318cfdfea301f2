// What the browser tests share: Debian's Chromium started as this machine allows, and a guard
// that keeps every request on the server under test.
import { chromium } from "playwright-core";

/** Debian's Chromium (`CHROMIUM`, default /usr/bin/chromium), headless. Without the
 * background-networking flags it tries to reach Google's hosts, which this machine refuses. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** Lets `context` reach only `host` (and `data:`/`blob:` URLs); anything else is aborted and
 * its URL pushed onto `outside`. */
export async function keepTo(context, host, outside) {
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.host === host || url.protocol === "data:" || url.protocol === "blob:") return route.continue();
    outside.push(url.href);
    return route.abort();
  });
}
