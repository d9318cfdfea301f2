// Drives the web client at / in Debian's Chromium, as two users in two browser contexts: they
// register, one creates a chat with the other, and they chat live both ways. Then the server is
// killed and started again mid-conversation while the other user keeps sending over REST, and
// the first user's page must end with every message exactly once, in order.
//
// Environment: BIN (the mrm-chat binary), WORK (a scratch directory), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOTS (a directory, optional). The test starts the server itself, so
// that it can restart it on the same port. Every request to anywhere but the server fails the
// test.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";

const bin = process.env.BIN;
const work = process.env.WORK;
const shots = process.env.SCREENSHOTS;
if (shots) mkdirSync(shots, { recursive: true });

const port = await new Promise((resolve) => {
  const probe = createServer();
  probe.listen(0, "127.0.0.1", () => {
    const { port } = probe.address();
    probe.close(() => resolve(port));
  });
});
const base = `http://127.0.0.1:${port}`;
let server;

/** Starts the server on `port` and waits until it listens. */
async function startServer() {
  server = spawn(bin, ["serve", "--bind", `127.0.0.1:${port}`], {
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: `sqlite://${work}/web.sqlite3`,
      MRM_ATTACHMENTS_DIR: `${work}/attachments`,
      MRM_MESSAGES_PER_SECOND: "1000",
      RUST_LOG: "warn",
      NO_COLOR: "1",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  for (let i = 0; i < 200; i++) {
    try {
      const answer = await fetch(`${base}/healthz`);
      if (answer.ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the server did not start");
}

async function stopServer() {
  const exited = new Promise((resolve) => server.once("exit", resolve));
  server.kill("SIGKILL");
  await exited;
}

const password = "Velvet-Harbor-Lantern-7";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const outside = [];
const errors = [];

/** A browser context signed up as `username`, on the chat list. */
async function person(username) {
  const context = await browser.newContext();
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.host === `127.0.0.1:${port}` || url.protocol === "data:" || url.protocol === "blob:") {
      return route.continue();
    }
    outside.push(url.href);
    return route.abort();
  });
  const page = await context.newPage();
  page.on("pageerror", (err) => errors.push(`${username}: ${err}`));
  await page.goto(`${base}/`);
  await page.getByRole("button", { name: "No account? Create one" }).click();
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("button", { name: "Log out" }).waitFor();
  return page;
}

/** The texts of the messages in `page`'s message log, in order. */
async function shownTexts(page) {
  return page.locator("[role=log] li.message .content").allTextContents();
}

try {
  await startServer();
  const alice = await person("alice");
  const bob = await person("bob");
  const snap = async (page, name) => shots && page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

  // Alice creates a chat with Bob; Bob finds it in his list.
  await alice.getByPlaceholder("Name").fill("team");
  await alice.getByPlaceholder("alice, bob").fill("bob");
  await alice.getByRole("button", { name: "Create" }).click();
  await alice.getByRole("heading", { name: "team" }).waitFor();
  await alice.getByText("Connected").or(alice.getByText(/^Online:/)).waitFor();
  await bob.reload();
  await bob.getByRole("link", { name: /team/ }).click();
  await bob.getByRole("heading", { name: "team" }).waitFor();

  // Live, both ways.
  await alice.getByRole("textbox", { name: "Message" }).fill("hello bob");
  await alice.getByRole("textbox", { name: "Message" }).press("Enter");
  await bob.locator("[role=log]").getByText("hello bob").waitFor();
  await bob.getByRole("textbox", { name: "Message" }).fill("hi alice");
  await bob.getByRole("button", { name: "Send" }).click();
  await alice.locator("[role=log]").getByText("hi alice").waitFor();
  await snap(alice, "web-chat");

  // The server goes away mid-conversation and comes back; Bob keeps sending over REST.
  const token = await (
    await fetch(`${base}/api/tokens/`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: "bob", password }),
    })
  ).json();
  const chats = await (
    await fetch(`${base}/api/chats/`, { headers: { Authorization: `Bearer ${token.token}` } })
  ).json();
  const chatId = chats[0].id;
  const sendAsBob = async (content) => {
    const answer = await fetch(`${base}/api/chats/${chatId}/send_message/`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token.token}` },
      body: JSON.stringify({ content }),
    });
    assert.equal(answer.status, 201, `send ${content}`);
  };
  await sendAsBob("rest 1");
  await stopServer();
  await alice.getByText(/^Offline: reconnecting/).waitFor();
  await startServer();
  for (let i = 2; i <= 10; i++) await sendAsBob(`rest ${i}`);
  await alice.locator("[role=log]").getByText("rest 10", { exact: true }).waitFor({ timeout: 30000 });
  const expected = ["hello bob", "hi alice", ...Array.from({ length: 10 }, (_, i) => `rest ${i + 1}`)];
  assert.deepEqual(await shownTexts(alice), expected, "every message once, in order, after the restart");
  await snap(alice, "web-after-restart");

  // A phone-sized screen shows one pane at a time.
  await alice.setViewportSize({ width: 375, height: 740 });
  assert.equal(await alice.locator("nav.sidebar").isVisible(), false, "the list hides behind the chat");
  await alice.getByRole("button", { name: "Back to chats" }).click();
  await alice.getByRole("link", { name: /team/ }).waitFor();

  assert.deepEqual(outside, [], "no request left the machine");
  assert.deepEqual(errors, [], "no script error on the pages");
  console.log("web client: live chat both ways, restart survived, phone layout: ok");
} finally {
  await browser.close();
  if (server && server.exitCode === null) await stopServer();
}
