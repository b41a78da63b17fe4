// @segment/analytics-next and posthog-js, unmodified and bundled into a test page on
// another origin, in headless Chromium: every call type stored once with its mapped type,
// with no console error, page error or failed request (posthog-js's start-up calls for
// remote config and flags included).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import puppeteer from "puppeteer-core";
import { API_KEY, Server, assertEachStoredOnce, until } from "../harness.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const PER_CALL = 50;

let web, browser, profile, script;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (or set CHROMIUM_BIN)`);
  const bundled = await build({
    entryPoints: [new URL("./page.mjs", import.meta.url).pathname],
    bundle: true,
    format: "esm",
    write: false,
    define: { "process.env.NODE_ENV": '"production"' },
  });
  script = bundled.outputFiles[0].text;
  web = createServer((request, response) => {
    const path = new URL(request.url, "http://x").pathname;
    if (path === "/page.js") return response.writeHead(200, { "content-type": "text/javascript" }).end(script);
    if (path === "/page.html") {
      return response
        .writeHead(200, { "content-type": "text/html" })
        .end(`<!doctype html><html><head><title>capture</title><link rel="icon" href="data:,"></head><body><script type="module" src="/page.js"></script></body></html>`);
    }
    response.writeHead(404).end();
  });
  await new Promise((resolve) => web.listen(0, "127.0.0.1", resolve));
  profile = mkdtempSync(join(tmpdir(), "eventline-capture-chromium-"));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  web?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** Opens the test page for `server`, recording every error the page meets. */
async function openPage(server) {
  const page = await browser.newPage();
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => problems.push(`failed: ${request.url()} ${request.failure()?.errorText}`));
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`${response.status()}: ${response.url()}`);
  });
  const params = new URLSearchParams({ server: server.url, key: API_KEY });
  await page.goto(`http://127.0.0.1:${web.address().port}/page.html?${params}`);
  await page.waitForFunction(() => typeof window.runPosthog === "function");
  return { page, problems };
}

/** Runs `run` (window.runSegment or window.runPosthog) on a fresh server and checks
 * every event it reports is stored once, with no error on the page. */
async function sendFromPage(run, what) {
  const server = await Server.start();
  try {
    const { page, problems } = await openPage(server);
    const expected = await page.evaluate((name, count) => window[name](count), run, PER_CALL);
    assert.equal(expected.length, 6 * PER_CALL);
    await until(async () => (await server.count()) >= expected.length, 30_000, `every ${what} event`);
    assertEachStoredOnce(await server.events(), expected);
    assert.deepEqual(problems, []);
    await page.close();
  } finally {
    await server.stop();
  }
}

test("@segment/analytics-next in Chromium: every call type stored once, no errors", () => sendFromPage("runSegment", "Segment"));

test("posthog-js in Chromium (gzip-js bodies): every call type stored once, no errors", () => sendFromPage("runPosthog", "PostHog"));
