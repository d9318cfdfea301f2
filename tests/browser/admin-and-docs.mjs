// Drives Debian's Chromium through the admin area and the API documentation pages.
//
// Environment: BASE_URL (the running server), ADMIN_USER / ADMIN_PASSWORD (a superuser),
// TARGET_USER / TARGET_PASSWORD (an ordinary user whose type the admin changes),
// CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (a directory, optional).
// Every request to anywhere but the server fails the test.
import { keepTo, launch } from "./chromium.mjs";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";

const base = process.env.BASE_URL;
const admin = { user: process.env.ADMIN_USER, password: process.env.ADMIN_PASSWORD };
const target = { user: process.env.TARGET_USER, password: process.env.TARGET_PASSWORD };
const shots = process.env.SCREENSHOTS;
if (shots) mkdirSync(shots, { recursive: true });
const own = new URL(base).host;

const browser = await launch();
const outside = [];
const errors = [];
try {
  const context = await browser.newContext();
  await keepTo(context, own, outside);
  const page = await context.newPage();
  page.on("pageerror", (err) => errors.push(String(err)));
  const snap = async (name) => shots && page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

  // Log in to the admin area.
  await page.goto(`${base}/admin/`);
  assert.match(page.url(), /\/admin\/login\//, "anonymous visitors are sent to the login page");
  await page.locator("input[name=username]").fill(admin.user);
  await page.locator("input[name=password]").fill(admin.password);
  await Promise.all([page.waitForURL(/\/admin\/$/), page.locator("form button[type=submit]").first().click()]);
  await snap("dashboard");

  // Find the user and change their type.
  await page.goto(`${base}/admin/users/`);
  await page.locator("input[name=q]").fill(target.user);
  await Promise.all([page.waitForURL(/q=/), page.locator("input[name=q]").press("Enter")]);
  await snap("users");
  await Promise.all([page.waitForLoadState(), page.getByRole("link", { name: target.user, exact: true }).first().click()]);
  await page.locator("select[name=user_type]").selectOption("owner");
  await snap("user-edit");
  await Promise.all([
    page.waitForLoadState(),
    page.locator("form:has(select[name=user_type]) button[type=submit]").first().click(),
  ]);

  // The API reports the new type.
  const login = await fetch(`${base}/api/login/`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: target.user, password: target.password }),
  });
  assert.equal(login.status, 200);
  assert.equal((await login.json()).user_type, "owner", "the admin's change reached the API");

  // Swagger UI renders the schema.
  await page.goto(`${base}/api/docs/`);
  await page.locator(".swagger-ui .info .title").filter({ hasText: "MRM Chat API" }).waitFor({ timeout: 20000 });
  await page.locator(".opblock-tag").filter({ hasText: "WebSockets" }).waitFor();
  await snap("swagger");

  // ReDoc renders it too.
  await page.goto(`${base}/api/redoc/`);
  await page.locator("h1").filter({ hasText: "MRM Chat API" }).waitFor({ timeout: 20000 });
  await snap("redoc");

  assert.deepEqual(outside, [], "no request left the machine");
  assert.deepEqual(errors, [], "no script error on any page");
  console.log("browser test passed: admin login, user type change, Swagger UI, ReDoc");
} finally {
  await browser.close();
}
