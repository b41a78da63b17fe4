// Runs the real `eventline` binary ($EVENTLINE_BIN) on free ports against a fresh
// PostgreSQL database, reads what it stored back through the REST gateway (ListEvents,
// CountEvents), and can SIGKILL it and start it again on the same ports and database.
import { spawn } from "node:child_process";
import assert from "node:assert/strict";
import { binary, freePort, freshDatabase, psql } from "../../scripts/lib/test-process.mjs";

export const API_KEY = "elk_capture_test_bootstrap_key_0123456789";
const EPOCH = "2000-01-01T00:00:00Z";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Server {
  /** A server on a fresh database; `env` adds `EVENTLINE_*` settings. */
  static async start(env = {}) {
    const database = freshDatabase("capture_js");
    const server = new Server(database.name, database.url, env, [await freePort(), await freePort(), await freePort()]);
    await server.start();
    return server;
  }

  constructor(database, databaseUrl, env, [httpPort, grpcPort, metricsPort]) {
    Object.assign(this, { database, databaseUrl, env, httpPort, grpcPort, metricsPort });
    this.url = `http://127.0.0.1:${httpPort}`;
  }

  async start() {
    this.process = spawn(binary(), ["serve"], {
      stdio: ["ignore", "ignore", "inherit"],
      env: {
        ...process.env,
        EVENTLINE_DATABASE_URL: this.databaseUrl,
        EVENTLINE_HTTP_ADDR: `127.0.0.1:${this.httpPort}`,
        EVENTLINE_GRPC_ADDR: `127.0.0.1:${this.grpcPort}`,
        EVENTLINE_METRICS_ADDR: `127.0.0.1:${this.metricsPort}`,
        EVENTLINE_BOOTSTRAP_API_KEY: API_KEY,
        EVENTLINE_LOG_LEVEL: "warn",
        ...this.env,
      },
    });
    this.exited = new Promise((resolve) => this.process.once("exit", resolve));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.process.exitCode !== null) throw new Error(`eventline exited with ${this.process.exitCode}`);
      try {
        if ((await fetch(`${this.url}/readyz`)).status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error("eventline did not become ready within 30 s");
  }

  async kill() {
    this.process.kill("SIGKILL");
    await this.exited;
  }

  async stop() {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill("SIGTERM");
      await this.exited;
    }
    psql(`DROP DATABASE IF EXISTS ${this.database} WITH (FORCE)`);
  }

  async get(path, params) {
    const query = new URLSearchParams(params).toString();
    const answer = await fetch(`${this.url}${path}?${query}`, { headers: { "X-API-Key": API_KEY } });
    assert.equal(answer.status, 200, `${path}: ${await answer.clone().text()}`);
    return answer.json();
  }

  /** Every stored event (ListEvents, all pages). */
  async events() {
    const events = [];
    let pageToken = "";
    do {
      const page = await this.get("/v1/events", { page_size: "1000", start_time: EPOCH, page_token: pageToken });
      events.push(...page.events);
      pageToken = page.next_page_token ?? "";
    } while (pageToken);
    return events;
  }

  /** CountEvents over all time. */
  async count() {
    return Number((await this.get("/v1/stats/count", { start_time: EPOCH })).count);
  }

  /** A sample of the metrics port, or undefined. */
  async metric(nameAndLabels) {
    const text = await (await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`)).text();
    const line = text.split("\n").find((candidate) => candidate.startsWith(`${nameAndLabels} `));
    return line === undefined ? undefined : Number(line.split(" ").at(-1));
  }
}

/**
 * Checks that `stored` holds each `expected` event exactly once and nothing else. An
 * expected event is `{ id, type, user, properties }`; without `id` (SDK calls that take
 * none) it is found by its type and user, which the tests keep unique.
 */
export function assertEachStoredOnce(stored, expected) {
  const ids = new Map();
  for (const event of stored) ids.set(event.event_id, (ids.get(event.event_id) ?? 0) + 1);
  const duplicated = [...ids].filter(([, count]) => count > 1).map(([id]) => id);
  assert.deepEqual(duplicated, [], "events stored more than once");
  const byKey = new Map();
  for (const event of stored) {
    const key = `${event.event_type}|${event.user_id ?? ""}`;
    byKey.set(key, [...(byKey.get(key) ?? []), event]);
  }
  const byId = new Map(stored.map((event) => [event.event_id, event]));
  const missing = [];
  for (const want of expected) {
    let event = want.id === undefined ? undefined : byId.get(want.id);
    if (want.id === undefined) {
      const candidates = byKey.get(`${want.type}|${want.user}`) ?? [];
      assert.ok(candidates.length <= 1, `${want.type} of ${want.user} stored ${candidates.length} times`);
      event = candidates[0];
    }
    if (!event) {
      missing.push(want.id ?? `${want.type}|${want.user}`);
      continue;
    }
    assert.equal(event.event_type, want.type, `type of ${event.event_id}`);
    assert.equal(event.user_id ?? "", want.user, `user of ${event.event_id}`);
    for (const [name, value] of Object.entries(want.properties ?? {})) {
      assert.deepEqual(event.properties[name], value, `${name} of ${event.event_id}`);
    }
  }
  assert.deepEqual(missing.slice(0, 5), [], `${missing.length} of ${expected.length} events missing`);
  assert.equal(stored.length, expected.length, "stored events besides the expected ones");
}

/** Polls until `check()` is true, or fails after `ms`. */
export async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export { sleep };
