// Drives the web client at / in Debian's Chromium, as two users in two browser contexts: they
// register, one creates a chat with the other, and they chat live both ways. Then the server is
// killed and started again mid-conversation while the other user keeps sending over REST, and
// the first user's page must end with every message exactly once, in order.
//
// Environment: BIN (the mrm-chat binary), WORK (a scratch directory), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOTS (a directory, optional). The test starts the server itself, so
// that it can restart it on the same port. Every request to anywhere but the server fails the
// test.
import { keepTo, launch } from "./chromium.mjs";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { crc32, deflateSync } from "node:zlib";

/** A `width` × `height` PNG of a colour gradient. */
function png(width, height) {
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "latin1");
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const rows = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) rows.set([x * 16, y * 16, 128], y * (width * 3 + 1) + 1 + x * 3);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(rows)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

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

// A fake OpenAI-compatible provider: a short streamed reply, numbered, or, for a question holding
// "slow", a reply that goes on a word every 100 ms until the server stops reading it.
let replies = 0;
const provider = createHttpServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    const chunk = (content, finish = null) =>
      `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content }, finish_reason: finish }] })}\n\n`;
    const usage = `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } })}\n\n`;
    if (!body.includes("slow")) {
      replies += 1;
      res.end(chunk("Hello") + chunk(` there #${replies}`, "stop") + usage + "data: [DONE]\n\n");
      return;
    }
    let n = 0;
    const timer = setInterval(() => {
      if (n++ > 300) {
        clearInterval(timer);
        res.end(chunk(" end", "stop") + usage + "data: [DONE]\n\n");
      } else res.write(chunk(` word${n}`));
    }, 100);
    res.on("close", () => clearInterval(timer));
  });
});
const providerPort = await new Promise((resolve) => provider.listen(0, "127.0.0.1", () => resolve(provider.address().port)));

/** Starts the server on `port` and waits until it listens. */
async function startServer() {
  server = spawn(bin, ["serve", "--bind", `127.0.0.1:${port}`], {
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: `sqlite://${work}/web.sqlite3`,
      MRM_ATTACHMENTS_DIR: `${work}/attachments`,
      MRM_MESSAGES_PER_SECOND: "1000",
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: `http://127.0.0.1:${providerPort}/v1`,
      OPENAI_MODEL: "fake-model",
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
const browser = await launch();
const outside = [];
const errors = [];

/** A browser context signed up as `username`, on the chat list. */
async function person(username, options = {}) {
  const context = await browser.newContext(options);
  await keepTo(context, `127.0.0.1:${port}`, outside);
  const page = await context.newPage();
  page.on("pageerror", (err) => errors.push(`${username}: ${err}`));
  // The policy is enforced (except where an audit must inject its script): nothing it refuses.
  page.on("console", (msg) => {
    if (/Content Security Policy|Refused to/.test(msg.text())) errors.push(`${username}: ${msg.text()}`);
  });
  await page.goto(`${base}/`);
  if (options.audit) {
    await page.getByRole("button", { name: "Log in" }).waitFor();
    await options.audit(page);
  }
  await page.getByRole("button", { name: "No account? Create one" }).click();
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("button", { name: "Log out" }).waitFor();
  return page;
}

const axeScript = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

/** Runs axe-core on `page` and fails on any serious or critical violation. The page's context
 * must bypass the Content-Security-Policy (which rightly refuses the injected script). */
async function audit(page, screen) {
  await page.addScriptTag({ path: axeScript });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const serious = result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  assert.deepEqual(serious, [], `accessibility of ${screen}`);
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
  await alice.getByPlaceholder("Name", { exact: true }).fill("team");
  await alice.getByPlaceholder("alice, bob").fill("bob");
  await alice.getByRole("button", { name: "Create" }).click();
  await alice.getByRole("heading", { name: "team" }).waitFor();
  await alice.getByText("Connected").or(alice.getByText(/^Online:/)).waitFor();
  await bob.reload();
  await bob.getByRole("link", { name: /team/ }).click();
  await bob.getByRole("heading", { name: "team" }).waitFor();

  // Live, both ways.
  await alice.getByRole("textbox", { name: "Message", exact: true }).fill("hello bob");
  await alice.getByRole("textbox", { name: "Message", exact: true }).press("Enter");
  await bob.locator("[role=log]").getByText("hello bob").waitFor();
  await bob.getByRole("textbox", { name: "Message", exact: true }).fill("hi alice");
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

  // Bob edits, reacts and deletes; Alice sees each change as it happens.
  const bobsLine = bob.locator("li.message").filter({ hasText: "hi alice" });
  await bobsLine.getByRole("button", { name: "Edit" }).click();
  await bob.getByRole("textbox", { name: "Edit message" }).fill("hi alice, edited");
  await bob.getByRole("button", { name: "Save" }).click();
  await alice.locator("[role=log]").getByText("hi alice, edited").waitFor();
  await alice.locator("li.message").filter({ hasText: "hi alice, edited" }).getByText("(edited)").waitFor();
  await bob.locator("li.message").filter({ hasText: "rest 3" }).getByRole("button", { name: "React 👍" }).click();
  await alice.locator("li.message").filter({ hasText: "rest 3" }).getByRole("button", { name: "👍 1" }).waitFor();
  // Reopened, the chat counts the reaction once (its log replays it after the history page).
  await alice.reload();
  await alice.locator("li.message").filter({ hasText: "rest 3" }).getByRole("button", { name: "👍 1" }).waitFor();
  // Frames arrive in order: once a message sent now is shown, the replay is behind it.
  await alice.getByRole("textbox", { name: "Message", exact: true }).fill("after reload");
  await alice.getByRole("textbox", { name: "Message", exact: true }).press("Enter");
  await alice.locator("li.message.saved").filter({ hasText: "after reload" }).waitFor();
  assert.equal(await alice.getByRole("button", { name: "👍 2" }).count(), 0, "a replayed reaction counted twice");
  await bob.locator("li.message").filter({ hasText: "rest 4" }).getByRole("button", { name: "Delete" }).click();
  await alice.locator("li.message").filter({ hasText: "This message was deleted." }).waitFor();
  assert.equal(await alice.locator("[role=log]").getByText("rest 4", { exact: true }).count(), 0);

  // Search finds a message and opens its chat.
  await alice.getByRole("searchbox", { name: "Search messages" }).fill("edited");
  await alice.getByRole("searchbox", { name: "Search messages" }).press("Enter");
  const hit = alice.getByRole("region", { name: "Search results" }).getByRole("link");
  await hit.first().waitFor();
  assert.match(await hit.first().textContent(), /bob: hi alice, edited/);

  // An image attached by Alice shows its thumbnail to Bob.
  const dot = png(16, 16);
  await alice.locator("input[type=file]").setInputFiles({ name: "dot.png", mimeType: "image/png", buffer: dot });
  const preview = bob.locator("[role=log] img[alt='dot.png']");
  await preview.waitFor();
  await bob.waitForFunction(() => {
    const img = document.querySelector("[role=log] img[alt='dot.png']");
    return img && img.complete && img.naturalWidth > 0;
  });
  await snap(bob, "web-image");

  // An AI reply streams in, and Stop ends one that goes on.
  await alice.getByPlaceholder("Title").fill("helper");
  await alice.getByRole("button", { name: "Start" }).click();
  await alice.getByRole("heading", { name: "helper" }).waitFor();
  await alice.getByRole("button", { name: "Ask" }).and(alice.locator(":not([disabled])")).waitFor();
  await alice.getByRole("textbox", { name: "Question" }).fill("hi");
  await alice.getByRole("textbox", { name: "Question" }).press("Enter");
  await alice.locator("li.message.assistant").filter({ hasText: "Hello there" }).waitFor();
  await alice.getByText("7 tokens").waitFor();
  // The conversation's model is shown; the answer can be asked for again, and the first one
  // shown again.
  assert.equal(await alice.getByRole("combobox", { name: "Model" }).inputValue(), "openai/fake-model");
  const answers = alice.locator("li.message.assistant:not(.streaming)");
  const first = (await answers.last().locator("p.content").textContent()).trim();
  await alice.getByRole("button", { name: "Regenerate" }).click();
  await alice.getByText("Answer 2 of 2").waitFor();
  assert.equal(await answers.count(), 1, "the new answer takes the old one's place");
  const second = (await answers.last().locator("p.content").textContent()).trim();
  assert.notEqual(second, first);
  await alice.getByRole("button", { name: "Previous answer" }).click();
  await alice.getByText("Answer 1 of 2").waitFor();
  assert.equal(await answers.count(), 1);
  assert.equal((await answers.last().locator("p.content").textContent()).trim(), first);
  // A question edited is asked again on a branch of its own.
  await alice.locator("li.message.mine").filter({ hasText: "hi" }).getByRole("button", { name: "Edit" }).click();
  await alice.getByRole("textbox", { name: "Edit question" }).fill("hi again");
  await alice.getByRole("button", { name: "Ask again" }).click();
  await alice.getByText("Version 2 of 2").waitFor();
  await alice.waitForFunction(
    (known) => {
      const shown = [...document.querySelectorAll("li.message.assistant:not(.streaming) p.content")];
      return shown.length === 1 && !known.includes(shown[0].textContent.trim());
    },
    [first, second],
  );
  assert.equal(await answers.count(), 1, "the new branch has its own answer only");
  await alice.getByRole("textbox", { name: "Question" }).fill("a slow one please");
  await alice.getByRole("textbox", { name: "Question" }).press("Enter");
  await alice.locator("li.message.streaming").filter({ hasText: "word3" }).waitFor();
  // Reloaded mid-reply, the page picks the reply up where it is, and it goes on.
  await alice.reload();
  const resumed = alice.locator("li.message.streaming");
  await resumed.filter({ hasText: "word3" }).waitFor();
  const before = (await resumed.textContent()).length;
  await alice.waitForFunction(
    (n) => (document.querySelector("li.message.streaming")?.textContent ?? "").length > n,
    before,
  );
  await alice.getByRole("button", { name: "Stop" }).click();
  await alice.locator("li.message.assistant").filter({ hasText: "stopped" }).waitFor();
  assert.equal(await alice.locator("li.message.streaming").count(), 0, "the stream ended");
  await snap(alice, "web-ai");
  await alice.goto(`${base}/#/chats/${chatId}`);
  await alice.getByRole("heading", { name: "team" }).waitFor();

  // Removed from the chat, Bob's page says so and stops reconnecting.
  await alice.getByRole("button", { name: "Members" }).click();
  await alice.getByRole("complementary", { name: "Members" }).getByRole("button", { name: "Remove" }).click();
  await bob.getByText("You are no longer a member of this chat.").waitFor();
  await snap(bob, "web-removed");

  // The main screens pass an accessibility check (axe-core), in the light and the dark theme.
  for (const colorScheme of ["light", "dark"]) {
    const carol = await person(`carol-${colorScheme}`, {
      bypassCSP: true,
      colorScheme,
      audit: async (page) => {
        await audit(page, `sign-in (${colorScheme})`);
        await snap(page, `web-sign-in-${colorScheme}`);
      },
    });
    await audit(carol, `chat list (${colorScheme})`);
    await carol.getByPlaceholder("Name", { exact: true }).fill("notes");
    await carol.getByRole("button", { name: "Create" }).click();
    await carol.getByRole("heading", { name: "notes" }).waitFor();
    await carol.getByRole("textbox", { name: "Message", exact: true }).fill("an accessible note");
    await carol.getByRole("textbox", { name: "Message", exact: true }).press("Enter");
    await carol.locator("li.message.saved").filter({ hasText: "an accessible note" }).waitFor();
    await carol.locator("input[type=file]").setInputFiles({ name: "dot.png", mimeType: "image/png", buffer: dot });
    await carol.locator("[role=log] img[alt='dot.png']").waitFor();
    await audit(carol, `chat (${colorScheme})`);
    await snap(carol, `web-chat-${colorScheme}`);
    await carol.getByRole("searchbox", { name: "Search messages" }).fill("accessible");
    await carol.getByRole("searchbox", { name: "Search messages" }).press("Enter");
    await carol.getByRole("region", { name: "Search results" }).getByRole("link").first().waitFor();
    await audit(carol, `search results (${colorScheme})`);
    await snap(carol, `web-search-${colorScheme}`);
    await carol.getByPlaceholder("Title").fill("assistant");
    await carol.getByRole("button", { name: "Start" }).click();
    await carol.getByRole("heading", { name: "assistant" }).waitFor();
    await carol.getByRole("textbox", { name: "Question" }).fill("hi");
    await carol.getByRole("textbox", { name: "Question" }).press("Enter");
    await carol.locator("li.message.assistant").filter({ hasText: "Hello there" }).waitFor();
    await audit(carol, `AI conversation (${colorScheme})`);
    await snap(carol, `web-ai-${colorScheme}`);
    await carol.context().close();
  }

  // A phone-sized screen shows one pane at a time.
  await alice.setViewportSize({ width: 375, height: 740 });
  assert.equal(await alice.locator("nav.sidebar").isVisible(), false, "the list hides behind the chat");
  await snap(alice, "web-phone-chat");
  await alice.getByRole("button", { name: "Back to chats" }).click();
  await alice.getByRole("link", { name: /team/ }).waitFor();
  await snap(alice, "web-phone-list");

  assert.deepEqual(outside, [], "no request left the machine");
  assert.deepEqual(errors, [], "no script error on the pages");
  console.log("web client: live chat both ways, restart survived, edits/reactions/deletions, search, image preview, AI stream and Stop, phone layout: ok");
} finally {
  await browser.close();
  if (server && server.exitCode === null) await stopServer();
  provider.close();
}
