// The producer contract (clients/README.md) against the real server and PostgreSQL.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createClient, ValidationError } from "../../dist/node/index.js";
import { API_KEY, exactlyOnce, freshDatabase, metric, startServer, storedIds } from "../harness.mjs";

const databases = [];
const servers = [];
function database() {
  const created = freshDatabase();
  databases.push(created);
  return created;
}
async function server(databaseUrl, options) {
  const started = await startServer(databaseUrl, options);
  servers.push(started);
  return started;
}
after(async () => {
  for (const started of servers) await started.kill();
  for (const created of databases) created.drop();
});

const quiet = { onRejected: () => {} };

test("10,000 events are all accepted and counted by the server", async () => {
  const srv = await server(database().url);
  const client = createClient({ baseUrl: srv.grpcUrl, apiKey: API_KEY, ...quiet });
  for (let index = 0; index < 10_000; index++) client.track("page_view", { userId: `u${index % 97}`, properties: { index } });
  const counts = await client.shutdown(60_000);
  assert.deepEqual(counts, { accepted: 10_000, duplicates: 0, rejected: 0, dropped: 0, failed: 0 });
  assert.equal(await client.countEvents({ eventType: "page_view" }), 10_000);
});

test("a SIGKILL and restart mid-stream stores every event exactly once", async () => {
  const db = database();
  let srv = await server(db.url);
  const client = createClient({ baseUrl: srv.grpcUrl, apiKey: API_KEY, maxQueueSize: 20_000, ...quiet });
  const tracked = new Set();
  for (let index = 0; index < 20_000; index++) tracked.add(client.track("crash_test", { properties: { index } }));
  while (client.stats().accepted < 2_000) await new Promise((resolve) => setTimeout(resolve, 5));
  await srv.kill();
  assert.ok(client.stats().accepted < 20_000, "the kill landed mid-stream");
  await new Promise((resolve) => setTimeout(resolve, 1000));
  srv = await server(db.url, { ports: srv.ports });
  const counts = await client.shutdown(120_000);
  assert.equal(counts.accepted + counts.duplicates, 20_000, JSON.stringify(counts));
  assert.equal(counts.failed + counts.dropped + counts.rejected, 0);
  assert.ok(client.stats().retries > 0, "the producer reconnected");
  const { repeated, missing, extra } = exactlyOnce(await storedIds(client), tracked);
  assert.deepEqual({ repeated: repeated.length, missing: missing.length, extra: extra.length }, { repeated: 0, missing: 0, extra: 0 });
});

test("RESOURCE_EXHAUSTED from a full writer queue is backed off as RetryInfo asks, and nothing is lost", async () => {
  const srv = await server(database().url, {
    env: { EVENTLINE_WRITER_QUEUE_EVENTS: "2000", EVENTLINE_WRITER_ENQUEUE_TIMEOUT_MS: "1" },
  });
  const refusals = [];
  const client = createClient({
    baseUrl: srv.grpcUrl,
    apiKey: API_KEY,
    maxBatch: 2000,
    maxInFlight: 4,
    maxQueueSize: 12_000,
    ...quiet,
    onError: (error, retryInMs) => refusals.push({ code: error.code, retryInMs }),
  });
  let smallestWindow = Infinity;
  const watch = setInterval(() => (smallestWindow = Math.min(smallestWindow, client.stats().inFlightWindow)), 5);
  for (let index = 0; index < 12_000; index++) client.track("overload", { properties: { index } });
  const counts = await client.shutdown(120_000);
  clearInterval(watch);
  // Four 2,000-event batches never fit a 2,000-event queue at once: the window must shrink.
  assert.ok(smallestWindow < 4, `the in-flight window shrank: ${smallestWindow}`);
  // A refused batch ends the stream, so acknowledgements of batches that committed beside
  // it are lost and their resends come back as duplicates: stored once either way.
  assert.equal(counts.accepted + counts.duplicates, 12_000, JSON.stringify(counts));
  assert.equal(counts.rejected + counts.dropped + counts.failed, 0);
  const exhausted = refusals.filter((refusal) => refusal.code === 8); // Code.ResourceExhausted
  assert.ok(exhausted.length > 0, `the server refused at least once: ${JSON.stringify(refusals)}`);
  // The server's RetryInfo asks for 500 ms; backoff alone would start at <= 100 ms.
  for (const refusal of exhausted) assert.ok(refusal.retryInMs >= 500, JSON.stringify(refusal));
  assert.equal(await client.countEvents({ eventType: "overload" }), 12_000);
});

test("a full queue drops exactly the events that did not fit (drop-newest and drop-oldest)", async () => {
  const srv = await server(database().url);
  for (const queueFullPolicy of ["drop_newest", "drop_oldest"]) {
    const client = createClient({ baseUrl: srv.grpcUrl, apiKey: API_KEY, maxQueueSize: 100, queueFullPolicy, ...quiet });
    const ids = [];
    // One synchronous burst: the sender cannot take anything before it ends.
    for (let index = 0; index < 150; index++) ids.push(client.track(queueFullPolicy, { properties: { index } }));
    assert.equal(client.stats().dropped, 50);
    const counts = await client.shutdown(30_000);
    assert.deepEqual(counts, { accepted: 100, duplicates: 0, rejected: 0, dropped: 50, failed: 0 });
    const kept = new Set(queueFullPolicy === "drop_newest" ? ids.slice(0, 100) : ids.slice(50));
    const stored = (await storedIds(client)).filter((id) => ids.includes(id));
    assert.deepEqual(exactlyOnce(stored, kept), { repeated: [], missing: [], extra: [] });
  }
});

test("rejected events are counted, reported with the field, and not resent", async () => {
  const srv = await server(database().url);
  const rejections = [];
  const client = createClient({ baseUrl: srv.grpcUrl, apiKey: API_KEY, onRejected: (rejection) => rejections.push(rejection) });
  client.track("ok", { properties: { n: 1 } });
  // 150,000 numbers: ~300 KB as JSON (the client's check) but ~1.6 MB as protobuf, which
  // the server refuses as over 1 MiB.
  const bigId = client.track("too_big", { properties: { numbers: new Array(150_000).fill(0) } });
  client.track("ok", { properties: { n: 2 } });
  const counts = await client.shutdown(30_000);
  assert.deepEqual(counts, { accepted: 2, duplicates: 0, rejected: 1, dropped: 0, failed: 0 });
  assert.equal(rejections.length, 1);
  assert.equal(rejections[0].eventId, bigId);
  assert.match(rejections[0].error, /^event: encoded event is \d+ bytes/);
  assert.equal(await metric(srv, 'eventline_ingest_events_total{outcome="rejected"}'), 1, "sent once, never again");
  assert.equal(client.stats().retries, 0);
});

test("track() refuses at once what the server would reject, naming the field", () => {
  const client = createClient({ baseUrl: "http://127.0.0.1:1", apiKey: API_KEY });
  const cases = [
    [() => client.track(""), "event_type"],
    [() => client.track("x".repeat(129)), "event_type"],
    [() => client.track("a\u0007"), "event_type"],
    [() => client.track("ok", { userId: "u".repeat(257) }), "user_id"],
    [() => client.track("ok", { properties: { a: NaN } }), "properties.a"],
    [() => client.track("ok", { properties: { a: { b: new Date() } } }), "properties.a.b"],
    [() => client.track("ok", { properties: [1, 2] }), "properties"],
    [() => client.track("ok", { properties: { s: "x".repeat(1_100_000) } }), "event"],
    [() => client.track("ok", { timestamp: new Date(Date.UTC(1970, 5, 1)) }), "timestamp"],
    [() => client.track("ok", { eventId: "" }), "event_id"],
  ];
  let deep = {};
  const root = deep;
  for (let level = 0; level < 10; level++) deep = deep.next = {};
  cases.push([() => client.track("ok", { properties: root }), "properties" + ".next".repeat(10)]);
  for (const [call, field] of cases) {
    assert.throws(call, (error) => error instanceof ValidationError && error.field === field, field);
  }
  assert.deepEqual(client.stats().tracked, 0);
});

// The flush interval (10 min) is far beyond the test's timeout: an unref'd timer or an
// idle stream that kept the process alive would hang it until the timeout fails it.
test("a process that ends without shutdown() exits by itself and delivers its events on beforeExit", { timeout: 60_000 }, async () => {
  const srv = await server(database().url);
  const script = `
    import { createClient } from ${JSON.stringify(new URL("../../dist/node/index.js", import.meta.url).href)};
    const client = createClient({ baseUrl: ${JSON.stringify(srv.grpcUrl)}, apiKey: ${JSON.stringify(API_KEY)}, flushIntervalMs: 600000 });
    for (let index = 0; index < 300; index++) client.track("at_exit", { properties: { index } });`;
  const exitCode = await new Promise((resolve) => {
    const child = execFile(process.execPath, ["--input-type=module", "-e", script], (error) => resolve(error ? error.code : 0));
    child.stderr.pipe(process.stderr);
  });
  assert.equal(exitCode, 0);
  const client = createClient({ baseUrl: srv.grpcUrl, apiKey: API_KEY });
  assert.equal(await client.countEvents({ eventType: "at_exit" }), 300);
  await client.shutdown();
});

test("track() after shutdown() throws, and the counts stay exact", async () => {
  const client = createClient({ baseUrl: "http://127.0.0.1:1", apiKey: API_KEY });
  assert.deepEqual(await client.shutdown(100), { accepted: 0, duplicates: 0, rejected: 0, dropped: 0, failed: 0 });
  assert.throws(() => client.track("late"), /after shutdown/);
});
