// The browser producer in headless Chromium: a page on another origin than the server
// sends over gRPC-Web with CORS, leaves with keepalive requests, and survives being
// offline through localStorage; the React hooks track a page view and a click.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import puppeteer from "puppeteer-core";
import { createClient } from "../../dist/node/index.js";
import { API_KEY, exactlyOnce, freshDatabase, startServer } from "../harness.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const PAGES = new URL("./pages/", import.meta.url).pathname;
const html = (script) =>
  `<!doctype html><html><head><title>eventline test</title></head><body><div id="root"></div>` +
  `<script type="module" src="/${script}"></script></body></html>`;

let db, srv, web, browser, query, profile;
const files = new Map();

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (or set CHROMIUM_BIN)`);
  for (const [entry, name] of [["app.mjs", "app.js"], ["react-app.jsx", "react.js"]]) {
    const bundled = await build({
      entryPoints: [join(PAGES, entry)],
      bundle: true,
      format: "esm",
      write: false,
      jsx: "automatic",
      define: { "process.env.NODE_ENV": '"production"' },
    });
    files.set(`/${name}`, ["text/javascript", bundled.outputFiles[0].text]);
  }
  files.set("/app.html", ["text/html", html("app.js")]);
  files.set("/react.html", ["text/html", html("react.js")]);
  files.set("/blank.html", ["text/html", "<!doctype html><title>elsewhere</title>"]);
  web = createServer((request, response) => {
    const file = files.get(new URL(request.url, "http://x").pathname);
    if (!file) return response.writeHead(404).end();
    response.writeHead(200, { "content-type": file[0], "cache-control": "no-store" }).end(file[1]);
  });
  await new Promise((resolve) => web.listen(0, "127.0.0.1", resolve));
  db = freshDatabase();
  srv = await startServer(db.url);
  query = createClient({ baseUrl: srv.grpcUrl, apiKey: API_KEY });
  profile = mkdtempSync(join(tmpdir(), "eventline-chromium-"));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  await query?.shutdown(1000);
  await srv?.kill();
  web?.close();
  db?.drop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

function pageUrl(path, extra = {}) {
  const params = new URLSearchParams({ grpc: srv.grpcUrl, rest: srv.restUrl, key: API_KEY, ...extra });
  return `http://127.0.0.1:${web.address().port}/${path}?${params}`;
}

async function idsOfType(eventType) {
  const ids = [];
  for await (const event of query.listEvents({ eventType, pageSize: 1000 })) ids.push(event.eventId);
  return ids;
}

/** Waits (bounded) until the server holds `count` events of the type; returns their ids. */
async function waitForEvents(eventType, count) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ids = await idsOfType(eventType);
    if (ids.length >= count || Date.now() > deadline) return ids;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function openPage(url) {
  const page = await browser.newPage();
  page.on("pageerror", (error) => console.log(`page error: ${error}`));
  await page.goto(url);
  await page.waitForFunction(() => globalThis.eventline !== undefined);
  return page;
}

test("a page on another origin sends events over gRPC-Web with CORS", async () => {
  const preflight = await fetch(`${srv.grpcUrl}/eventline.v1.IngestService/IngestBatch`, {
    method: "OPTIONS",
    headers: {
      origin: `http://127.0.0.1:${web.address().port}`,
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type,x-api-key,x-grpc-web",
    },
  });
  assert.ok(
    preflight.ok && preflight.headers.has("access-control-allow-origin"),
    `the gRPC port answers a CORS preflight with ${preflight.status} and no Access-Control-Allow-Origin: ` +
      "browsers on other origins cannot call it over gRPC-Web",
  );
  const page = await openPage(pageUrl("app.html"));
  assert.notEqual(new URL(page.url()).origin, new URL(srv.grpcUrl).origin);
  const ids = await page.evaluate(() => trackMany(20, "grpc_web"));
  assert.equal(await page.evaluate(() => eventline.flush(20_000)), true);
  const stats = await page.evaluate(() => eventline.stats());
  assert.equal(stats.accepted, 20, JSON.stringify(stats));
  assert.deepEqual(exactlyOnce(await idsOfType("grpc_web"), new Set(ids)), { repeated: [], missing: [], extra: [] });
  await page.close();
});

test("events tracked right before navigating away arrive through the keepalive path", async () => {
  // A long interval and large batches: nothing goes out over gRPC-Web before the exit.
  const page = await openPage(pageUrl("app.html", { interval: "600000", batch: "2000", storage: "keepalive" }));
  const ids = await page.evaluate(() => trackMany(40, "keepalive"));
  assert.equal(await page.evaluate(() => eventline.stats().inFlight), 0);
  await page.goto(pageUrl("blank.html"));
  const stored = await waitForEvents("keepalive", 40);
  assert.deepEqual(exactlyOnce(stored, new Set(ids)), { repeated: [], missing: [], extra: [] });
  await page.close();
});

test("events tracked while the server is down arrive after it is back and the page reloads, each once", async () => {
  await srv.kill();
  const page = await openPage(pageUrl("app.html", { storage: "offline" }));
  const ids = await page.evaluate(() => trackMany(25, "offline"));
  // Leave while the server is still down: the keepalive requests fail, localStorage keeps them.
  await page.goto(pageUrl("blank.html"));
  const stored = await page.evaluate(() => JSON.parse(localStorage.getItem("offline") ?? "[]").map((event) => event.event_id));
  assert.deepEqual(new Set(stored), new Set(ids));
  srv = await startServer(db.url, { ports: srv.ports });
  await page.goto(pageUrl("app.html", { storage: "offline" }));
  await page.waitForFunction(() => globalThis.eventline !== undefined);
  assert.equal(await page.evaluate(() => eventline.flush(30_000)), true);
  const stats = await page.evaluate(() => eventline.stats());
  assert.equal(stats.restored, 25);
  assert.equal(stats.accepted + stats.duplicates, 25, JSON.stringify(stats));
  assert.deepEqual(exactlyOnce(await idsOfType("offline"), new Set(ids)), { repeated: [], missing: [], extra: [] });
  await page.close();
});

test("the React hooks track a page view and a click", async () => {
  const page = await openPage(pageUrl("react.html"));
  await page.click("#buy");
  assert.equal(await page.evaluate(() => eventline.flush(20_000)), true);
  const views = [];
  for await (const event of query.listEvents({ eventType: "page_view" })) views.push(event);
  const clicks = [];
  for await (const event of query.listEvents({ eventType: "click" })) clicks.push(event);
  assert.equal(views.length, 1);
  assert.equal(views[0].properties.path, "/react.html");
  assert.equal(views[0].properties.title, "eventline test");
  assert.equal(clicks.length, 1);
  assert.deepEqual(clicks[0].properties, { button: "buy" });
  await page.close();
});
