// The console in headless Chromium against the real binary, once on PostgreSQL and once
// on the embedded SQLite store. Every number the console shows is compared with the REST
// answer fetched here directly; screenshots of each view go to console/screenshots/.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";
import { ADMIN_TOKEN, API_KEY, freshStore, ok, rest, startServer } from "./harness.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const SCREENSHOTS = new URL("../screenshots/", import.meta.url).pathname;
const DAY = 86_400_000;

let browser, profile;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (or set CHROMIUM_BIN)`);
  profile = mkdtempSync(join(tmpdir(), "eventline-console-chromium-"));
  mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/**
 * A sample over four whole UTC days before today: 30 users view, even users sign up (on
 * day 0, 1 or 2), every third of them buys an hour later, and some log in a day later.
 */
function sample(dayZero) {
  const events = [];
  const at = (offset) => new Date(dayZero + offset).toISOString();
  for (let index = 1; index <= 30; index++) {
    const user = `u${index}`;
    const properties = { plan: index % 3 === 0 ? "pro" : "free", seats: index };
    events.push({ event_type: "view", user_id: user, timestamp: at(3_600_000 + index * 60_000), properties });
    if (index % 2 !== 0) continue;
    const signedUp = (index % 3) * DAY + 2 * 3_600_000 + index * 60_000;
    events.push({ event_type: "signup", user_id: user, timestamp: at(signedUp), properties });
    if (index % 3 === 0) events.push({ event_type: "buy", user_id: user, timestamp: at(signedUp + 3_600_000), properties });
    if (index % 4 === 0) events.push({ event_type: "login", user_id: user, timestamp: at(signedUp + DAY), properties });
    if (index % 5 === 0) events.push({ event_type: "login", user_id: user, timestamp: at(signedUp + 30 * 60_000), properties });
  }
  return events;
}

for (const kind of ["postgres", "sqlite"]) {
  describe(`console on ${kind}`, () => {
    let store, server, page;
    const violations = [];
    const today = Math.floor(Date.now() / DAY) * DAY;
    const dayZero = today - 4 * DAY;
    const window = { start_time: new Date(dayZero).toISOString(), end_time: new Date(today).toISOString() };
    const custom = `range=custom&from=${window.start_time}&to=${window.end_time}`;
    // One run writes the screenshots: the SQLite one, the store `cargo run` starts with.
    const shoot = async (name, target = page) => {
      if (kind === "sqlite") await target.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
    };
    const open = async (query) => {
      await page.goto(`${server.url}/?${query}`, { waitUntil: "domcontentloaded" });
    };
    const text = (selector) => page.$eval(selector, (element) => element.textContent.trim());
    const settled = () => page.waitForFunction(() => !document.querySelector(".panel.busy"), { timeout: 10_000 });

    before(async () => {
      store = freshStore(kind);
      server = await startServer(store);
      const answer = await ok(server, "/v1/events:batch", { method: "POST", body: { events: sample(dayZero) } });
      assert.ok(answer.results.every((result) => result.status === "INGEST_STATUS_ACCEPTED"), JSON.stringify(answer.results));
      page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 800 });
      page.on("console", (message) => {
        if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
      });
    });

    after(async () => {
      await page?.close();
      await server?.stop();
      store?.cleanup();
    });

    test("serves the embedded console with content types, caching and gzip", async () => {
      const html = await fetch(`${server.url}/`);
      assert.equal(html.status, 200);
      assert.match(html.headers.get("content-type"), /^text\/html/);
      assert.equal(html.headers.get("cache-control"), "no-cache");
      const page = await html.text();
      assert.equal(page, readFileSync(new URL("../dist/index.html", import.meta.url), "utf8"), "the binary embeds console/dist: rebuild it");
      const script = page.match(/src="(\/console\/app\.js\?v=\w+)"/)?.[1];
      assert.ok(script, "the page names its script");
      const asset = await fetch(`${server.url}${script}`, { headers: { "accept-encoding": "gzip" } });
      assert.equal(asset.status, 200);
      assert.match(asset.headers.get("content-type"), /^text\/javascript/);
      assert.match(asset.headers.get("cache-control"), /immutable/);
      assert.equal(asset.headers.get("content-encoding"), "gzip");
      assert.match(html.headers.get("content-security-policy"), /frame-ancestors 'none'/);
    });

    test("signs in with a key and the admin token, and refuses a wrong key with the server's message", async () => {
      await open("");
      await page.waitForSelector("[data-testid=signin-key]");
      await page.type("[data-testid=signin-key]", "elk_not_a_real_key");
      await page.click("[data-testid=signin]");
      await page.waitForSelector("[data-testid=error]");
      const refused = await rest(server, "/v1/stats/count", { auth: "elk_not_a_real_key" });
      assert.equal(refused.status, 401);
      assert.equal(await text("[data-testid=error]"), refused.body.message);
      await shoot("signin");

      await page.$eval("[data-testid=signin-key]", (input) => (input.value = ""));
      await page.type("[data-testid=signin-key]", API_KEY);
      await page.type("[data-testid=signin-admin]", ADMIN_TOKEN);
      await page.click("[data-testid=signin]");
      await page.waitForSelector("[data-testid=live-status]");
      assert.equal(await page.evaluate(() => sessionStorage.getItem("eventline.key")), API_KEY);
    });

    test("live: an event sent after the page opened arrives within 2 s; pause and resume miss nothing", async () => {
      await open("view=live");
      await page.waitForSelector("[data-testid=live-status][data-status=live]", { timeout: 10_000 });
      const first = `live-${kind}-${Date.now()}`;
      await ok(server, "/v1/events", { method: "POST", body: { event_id: first, event_type: "live_check", user_id: "u-live", properties: { n: 1 } } });
      await page.waitForSelector(`tr[data-event-id="${first}"]`, { timeout: 2000 });

      await page.click("[data-testid=pause]");
      await page.waitForSelector("[data-testid=live-status][data-status=paused]");
      const second = `${first}-paused`;
      await ok(server, "/v1/events", { method: "POST", body: { event_id: second, event_type: "live_check", user_id: "u-live" } });
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(await page.$(`tr[data-event-id="${second}"]`), null, "a paused list stays still");
      await page.click("[data-testid=pause]");
      await page.waitForSelector(`tr[data-event-id="${second}"]`, { timeout: 2000 });

      // Filters by type and property restart the tail from now with only what matches.
      await page.$eval("[data-testid=filter-type]", (input) => (input.value = ""));
      await page.type("[data-testid=filter-type]", "other_type");
      await page.keyboard.press("Enter");
      await page.type("[data-testid=filter-prop]", "plan=pro");
      await page.keyboard.press("Enter");
      await page.waitForSelector('[data-testid=live-status][data-status=live][data-filters*="plan=pro"][data-filters*="other_type"]', { timeout: 10_000 });
      const filtered = `${first}-filtered`;
      const skipped = [`${first}-other-type`, `${first}-other-plan`];
      await ok(server, "/v1/events:batch", {
        method: "POST",
        body: {
          events: [
            { event_id: skipped[0], event_type: "live_check", properties: { plan: "pro" } },
            { event_id: skipped[1], event_type: "other_type", properties: { plan: "free" } },
            { event_id: filtered, event_type: "other_type", properties: { plan: "pro" } },
          ],
        },
      });
      await page.waitForSelector(`tr[data-event-id="${filtered}"]`, { timeout: 2000 });
      for (const id of skipped) assert.equal(await page.$(`tr[data-event-id="${id}"]`), null, `${id} does not match the filters`);
      await shoot("live");

      // The list is bounded: 250 more events leave the newest 200 on the page.
      const burst = Array.from({ length: 250 }, (_, index) => ({ event_id: `${first}-burst-${index}`, event_type: "other_type", properties: { plan: "pro" } }));
      await ok(server, "/v1/events:batch", { method: "POST", body: { events: burst } });
      await page.waitForFunction(() => document.querySelector("[data-testid=live-status]").textContent.includes("251 received"), { timeout: 5000 });
      assert.match(await text("[data-testid=live-status]"), /251 received, newest 200 shown/);
      assert.equal(await page.$$eval("[data-testid=live-events] tbody tr", (rows) => rows.length), 200);
    });

    test("live: reconnects by itself after a server restart and resumes after the last event shown", async () => {
      await open("view=live&type=restart_check");
      await page.waitForSelector('[data-testid=live-status][data-status=live][data-filters*="restart_check"]', { timeout: 10_000 });
      const before = `restart-${kind}-${Date.now()}`;
      await ok(server, "/v1/events", { method: "POST", body: { event_id: before, event_type: "restart_check" } });
      await page.waitForSelector(`tr[data-event-id="${before}"]`, { timeout: 2000 });
      await server.stop();
      await page.waitForSelector("[data-testid=live-status][data-status=failed]", { timeout: 10_000 });
      server = await startServer(store, server.ports);
      // Stored while the page was disconnected: the resumed tail replays it.
      const during = `${before}-after-restart`;
      await ok(server, "/v1/events", { method: "POST", body: { event_id: during, event_type: "restart_check" } });
      await page.waitForSelector(`tr[data-event-id="${during}"]`, { timeout: 10_000 });
      assert.equal(await page.$$eval("[data-testid=live-events] tbody tr", (rows) => rows.length), 2);
    });

    test("explorer: filters, a user's timeline and an event's properties equal the listing", async () => {
      await open(`view=explorer&${custom}`);
      await page.waitForSelector("[data-testid=filter-type]");
      await page.type("[data-testid=filter-type]", "signup");
      await page.keyboard.press("Enter");
      await page.waitForFunction(() => location.search.includes("type=signup"));
      await settled();
      const listing = await ok(server, "/v1/events", { params: { event_type: "signup", ...window, page_size: 50 } });
      const shown = await page.$$eval("[data-testid=explorer-events] tbody tr", (rows) => rows.map((row) => row.dataset.eventId));
      assert.ok(listing.events.length > 0);
      assert.deepEqual(shown, listing.events.map((event) => event.event_id));

      // Properties filter, then a user's timeline by clicking the user.
      await page.type("[data-testid=filter-prop]", "plan=pro");
      await page.keyboard.press("Enter");
      await page.waitForFunction(() => location.search.includes("prop=plan%3Dpro"));
      await settled();
      const pro = await ok(server, "/v1/events", { params: { event_type: "signup", property_filters: "plan=pro", ...window, page_size: 50 } });
      const proShown = await page.$$eval("[data-testid=explorer-events] tbody tr", (rows) => rows.map((row) => row.dataset.eventId));
      assert.deepEqual(proShown, pro.events.map((event) => event.event_id));
      assert.ok(pro.events.length < listing.events.length, "the property filter narrows the listing");

      await open(`view=explorer&${custom}&user=u6`);
      await settled();
      const timeline = await ok(server, "/v1/users/u6/events", { params: { ...window, page_size: 50 } });
      const timelineShown = await page.$$eval("[data-testid=explorer-events] tbody tr", (rows) => rows.map((row) => row.dataset.eventId));
      assert.deepEqual(timelineShown, timeline.events.map((event) => event.event_id));
      assert.ok(timeline.events.length >= 3);
      await page.click(`tr[data-event-id="${timeline.events[0].event_id}"] a`);
      await page.waitForSelector("[data-testid=event-properties]");
      assert.deepEqual(JSON.parse(await text("[data-testid=event-properties]")), timeline.events[0].properties);
      await shoot("explorer");

      // Paging: the second page is the listing's second page.
      await open(`view=explorer&${custom}&size=20`);
      await settled();
      await page.click("[data-testid=next-page]");
      await page.waitForFunction(() => location.search.includes("t="));
      await settled();
      const firstPage = await ok(server, "/v1/events", { params: { ...window, page_size: 20 } });
      const secondPage = await ok(server, "/v1/events", { params: { ...window, page_size: 20, page_token: firstPage.next_page_token } });
      const pageShown = await page.$$eval("[data-testid=explorer-events] tbody tr", (rows) => rows.map((row) => row.dataset.eventId));
      assert.deepEqual(pageShown, secondPage.events.map((event) => event.event_id));
    });

    test("insights: the series and its total equal CountEvents and EventTimeseries", async () => {
      await open(`view=insights&type=view&interval=day&${custom}`);
      await page.waitForFunction(() => document.querySelector("[data-testid=total]")?.textContent !== "–");
      await settled();
      const count = await ok(server, "/v1/stats/count", { params: { event_type: "view", ...window } });
      const series = await ok(server, "/v1/stats/timeseries", { params: { event_type: "view", interval: "INTERVAL_DAY", ...window } });
      assert.equal(Number(count.count), 30);
      assert.equal((await text("[data-testid=total]")).replace(/,/g, ""), count.count);
      const cells = await page.$$eval("[data-testid=series-table] tbody tr", (rows) => rows.map((row) => [row.dataset.start, row.querySelector(".num").textContent.replace(/,/g, "")]));
      assert.deepEqual(cells, series.buckets.map((bucket) => [bucket.start_time, bucket.count]));
      assert.equal(cells.reduce((sum, [, value]) => sum + Number(value), 0), Number(count.count));
      await shoot("insights");

      // Unique users: the count the server gives for that measure.
      await open(`view=insights&measure=users&type=view&interval=day&${custom}`);
      await page.waitForFunction(() => document.querySelector("[data-testid=total]")?.textContent !== "–");
      await settled();
      const users = await ok(server, "/v1/stats/count", { params: { event_type: "view", measure: "MEASURE_UNIQUE_USERS", ...window } });
      assert.equal(users.count, "30");
      assert.equal((await text("[data-testid=total]")).replace(/,/g, ""), users.count);

      // Signups broken down by plan: one legend entry and one column per group of the count.
      await open(`view=insights&type=signup&by=plan&interval=day&${custom}`);
      await page.waitForFunction(() => document.querySelectorAll("[data-testid=legend] span").length > 1);
      await settled();
      const plans = await ok(server, "/v1/stats/count", { params: { event_type: "signup", group_by_property: "plan", ...window } });
      const legend = await page.$$eval("[data-testid=legend] span", (spans) => spans.map((span) => span.textContent));
      assert.deepEqual(legend, plans.groups.map((group) => group.value));
      assert.deepEqual(legend.sort(), ['"free"', '"pro"']);
      await shoot("insights-breakdown");

      // An error is shown in place with the server's message.
      const month = { start_time: new Date(today - 30 * DAY).toISOString(), end_time: window.end_time };
      await open(`view=insights&interval=minute&range=custom&from=${month.start_time}&to=${month.end_time}`);
      await page.waitForSelector("[data-testid=error]");
      const refused = await rest(server, "/v1/stats/timeseries", { params: { interval: "INTERVAL_MINUTE", ...month } });
      assert.equal(refused.status, 400);
      assert.equal(await text("[data-testid=error]"), refused.body.message);
    });

    test("funnels: the bars equal the Funnel RPC", async () => {
      await open(`view=funnels&within=86400s&${custom}`);
      await page.waitForSelector("[data-testid=funnel-steps]");
      await page.type("[data-testid=funnel-steps]", "view, signup, buy");
      await page.click("[data-testid=run]");
      await page.waitForSelector("[data-testid=funnel-table]");
      await settled();
      const funnel = await ok(server, "/v1/analytics/funnel", { params: { steps: ["view", "signup", "buy"], conversion_window: "86400s", ...window } });
      const shown = await page.$$eval("[data-testid=funnel-table] tbody tr", (rows) => rows.map((row) => [row.children[1].textContent, row.querySelector("[data-users]").dataset.users]));
      assert.deepEqual(shown, funnel.steps.map((step) => [step.event_type, step.users]));
      assert.deepEqual(funnel.steps.map((step) => Number(step.users)), [30, 5, 5]);
      await shoot("funnels");
    });

    test("retention: the cohort table equals the Retention RPC", async () => {
      await open(`view=retention&start=signup&return=login&interval=day&${custom}`);
      await page.waitForSelector("[data-testid=retention-table]");
      await settled();
      const retention = await ok(server, "/v1/analytics/retention", {
        params: { start_event_type: "signup", return_event_type: "login", interval: "RETENTION_INTERVAL_DAY", ...window },
      });
      const shown = await page.$$eval("[data-testid=retention-table] tbody tr", (rows) =>
        rows.map((row) => [row.dataset.cohort, ...[...row.querySelectorAll("[data-value]")].map((cell) => cell.dataset.value)]),
      );
      assert.deepEqual(shown, retention.cohorts.map((cohort) => [cohort.start_time, cohort.users, ...cohort.returned]));
      assert.ok(retention.cohorts.some((cohort) => Number(cohort.returned[1] ?? 0) > 0), "someone came back a day later");
      await shoot("retention");
    });

    test("keys: a key created and revoked in the console is refused afterwards", async () => {
      const tenants = await ok(server, "/v1/tenants", { auth: { admin: ADMIN_TOKEN } });
      const tenant = tenants.tenants[0].tenant_id;
      const keysPath = `/v1/tenants/${tenant}/keys`;
      const before = new Set((await ok(server, keysPath, { auth: { admin: ADMIN_TOKEN } })).api_keys.map((key) => key.key_id));
      await open("view=keys");
      await page.waitForSelector("[data-testid=create-key]");
      await page.click("[data-testid=create-key]");
      await page.waitForSelector("[data-testid=new-secret]");
      const secret = await text("[data-testid=new-secret]");
      assert.equal((await rest(server, "/v1/stats/count", { auth: secret })).status, 200);
      const created = (await ok(server, keysPath, { auth: { admin: ADMIN_TOKEN } })).api_keys.find((key) => !before.has(key.key_id));
      assert.ok(created, "the console created a key");
      const row = `tr[data-key-id="${created.key_id}"]`;
      await page.waitForSelector(`${row} [data-testid=revoke]`);
      await page.click(`${row} [data-testid=revoke]`);
      await page.waitForSelector(`${row} [data-testid=confirm-revoke]`);
      // The confirmation takes the focus, so Enter confirms.
      assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), "confirm-revoke");
      await page.keyboard.press("Enter");
      await page.waitForFunction((selector) => document.querySelector(`${selector} [data-testid=key-state]`)?.textContent.startsWith("revoked"), {}, row);
      const refused = await rest(server, "/v1/stats/count", { auth: secret });
      assert.equal(refused.status, 401);
      await page.waitForFunction((target) => [...document.querySelectorAll("[data-testid=audit] td")].some((cell) => cell.textContent === target), {}, created.key_id);
      await shoot("keys");

      // Signing in with the revoked key is refused in place, with the server's message.
      const context = await browser.createBrowserContext();
      const other = await context.newPage();
      await other.goto(`${server.url}/`);
      await other.waitForSelector("[data-testid=signin-key]");
      await other.type("[data-testid=signin-key]", secret);
      await other.click("[data-testid=signin]");
      await other.waitForSelector("[data-testid=error]");
      assert.equal(await other.$eval("[data-testid=error]", (element) => element.textContent.trim()), refused.body.message);
      await context.close();
    });

    test("first load: size within budget, gzipped, no layout shift, and the first data painted (measured)", async () => {
      await page.setCacheEnabled(false);
      // Layout shifts while the page and its data load (the Cumulative Layout Shift score).
      const observer = await page.evaluateOnNewDocument(() => {
        window.layoutShift = 0;
        new PerformanceObserver((list) => {
          for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.layoutShift += entry.value;
        }).observe({ type: "layout-shift", buffered: true });
      });
      await open(`view=insights&type=view&interval=day&${custom}`);
      await page.waitForFunction(() => performance.getEntriesByName("eventline:first-data").length > 0, { timeout: 10_000 });
      await settled();
      await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
      const measured = await page.evaluate(() => {
        const resources = performance.getEntriesByType("resource").filter((entry) => entry.name.includes("/console/"));
        const [navigation] = performance.getEntriesByType("navigation");
        return {
          encoded: navigation.encodedBodySize + resources.reduce((sum, entry) => sum + entry.encodedBodySize, 0),
          decoded: navigation.decodedBodySize + resources.reduce((sum, entry) => sum + entry.decodedBodySize, 0),
          firstContentfulPaint: performance.getEntriesByName("first-contentful-paint")[0]?.startTime,
          firstData: performance.getEntriesByName("eventline:first-data")[0].startTime,
          layoutShift: window.layoutShift,
        };
      });
      await page.removeScriptToEvaluateOnNewDocument(observer.identifier);
      await page.setCacheEnabled(true);
      assert.ok(measured.encoded <= 150 * 1024, `first load ${measured.encoded} B gzipped`);
      assert.ok(measured.encoded < measured.decoded, "assets travel gzipped");
      // 0.1 is the web's "good" threshold; the console reserves its boxes, so it stays near 0.
      assert.ok(measured.layoutShift < 0.01, `layout shift ${measured.layoutShift} while loading`);
      process.stderr.write(
        `# console on ${kind}: first load ${(measured.encoded / 1024).toFixed(1)} KiB gzipped (${(measured.decoded / 1024).toFixed(1)} KiB raw), ` +
          `first contentful paint ${measured.firstContentfulPaint === undefined ? "not reported" : `${Math.round(measured.firstContentfulPaint)} ms`}, first data painted ${Math.round(measured.firstData)} ms, layout shift ${measured.layoutShift.toFixed(4)}\n`,
      );
    });

    test("keyboard: the views and the window presets are reachable and work without a mouse", async () => {
      await open(`view=explorer&${custom}`);
      await page.waitForSelector("[data-testid=explorer-events]");
      await page.keyboard.press("Tab"); // the first focusable element: the first view link
      assert.equal(await page.evaluate(() => document.activeElement.textContent), "Live");
      for (let step = 0; step < 3; step++) await page.keyboard.press("Tab");
      assert.equal(await page.evaluate(() => document.activeElement.textContent), "Funnels");
      await page.keyboard.press("Enter");
      await page.waitForFunction(() => location.search === "?view=funnels");
      await page.focus("[data-testid=funnel-steps]");
      await page.keyboard.type("view, signup");
      await page.keyboard.press("Enter");
      await page.waitForFunction(() => location.search.includes("step=view&step=signup"));
      await page.focus("fieldset.window button");
      await page.keyboard.press("Tab"); // 24h, then 7d
      await page.keyboard.press("Space");
      await page.waitForFunction(() => location.search.includes("range=7d"));
      await page.waitForSelector("[data-testid=funnel-table]");
    });

    test("readable on a phone width and in dark mode", async () => {
      await page.setViewport({ width: 390, height: 844, isMobile: true });
      await open(`view=insights&type=view&interval=day&${custom}`);
      await page.waitForFunction(() => document.querySelector("[data-testid=total]")?.textContent !== "–");
      await settled();
      const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.equal(await overflow(), 0, "the page scrolls sideways on a phone");
      await shoot("phone");
      // Every view fits the width; wide tables scroll inside their panel.
      for (const query of ["view=live", `view=explorer&${custom}&user=u6&event=x`, `view=funnels&step=view&step=buy&${custom}`, `view=retention&start=signup&return=login&${custom}`, "view=keys"]) {
        await open(query);
        await page.waitForSelector("main .panel");
        await settled();
        assert.equal(await overflow(), 0, `${query} scrolls sideways on a phone`);
      }
      await page.setViewport({ width: 1280, height: 800 });
      await page.emulateMediaFeatures([{ name: "prefers-color-scheme", value: "dark" }]);
      await open(`view=funnels&step=view&step=signup&step=buy&${custom}`);
      await page.waitForSelector("[data-testid=funnel-table]");
      const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      assert.equal(background, "rgb(15, 18, 23)");
      await shoot("dark");
      await page.emulateMediaFeatures([]);
    });

    test("nothing the console did was blocked by its Content Security Policy", () => {
      assert.deepEqual(violations, []);
    });
  });
}
