// Runs the real `eventline` binary ($EVENTLINE_BIN) on free ports, on a fresh PostgreSQL
// database or on the embedded SQLite store in a temporary data dir; readiness is read
// from GET /readyz. The binary, ports and databases come from scripts/lib/test-process.mjs,
// which the SDK and capture suites share.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { binary, freePort, freshDatabase } from "../../scripts/lib/test-process.mjs";

/** The bootstrap key the servers start with (ingest + query scope). */
export const API_KEY = "elk_console_bootstrap_key_0123456789abcdef";
export const ADMIN_TOKEN = "console-admin-token-0123456789abcdef";

/**
 * A store for one suite: `postgres` creates a database `eventline_test_console_…` (its
 * `cleanup` drops it), `sqlite` a temporary data dir (its `cleanup` removes it).
 */
export function freshStore(kind) {
  binary(); // fail before creating anything when the binary is missing
  if (kind === "sqlite") {
    const dir = mkdtempSync(join(tmpdir(), "eventline-console-"));
    return { args: [], env: { EVENTLINE_DATA_DIR: dir }, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
  }
  const database = freshDatabase("console");
  return { args: ["--database-url", database.url], env: {}, cleanup: database.drop };
}

/**
 * Starts `eventline serve` on `store` with the bootstrap key and the admin token, and
 * waits for /readyz; `ports` (a previous server's `ports`) restarts it where it was.
 */
export async function startServer(store, ports) {
  ports ??= { grpc: await freePort(), http: await freePort(), metrics: await freePort() };
  const env = { ...process.env };
  // The SQLite run must not pick up the PostgreSQL URL the test scripts export.
  delete env.DATABASE_URL;
  delete env.EVENTLINE_DATABASE_URL;
  const child = spawn(binary(), ["serve", ...store.args], {
    env: {
      ...env,
      EVENTLINE_GRPC_ADDR: `127.0.0.1:${ports.grpc}`,
      EVENTLINE_HTTP_ADDR: `127.0.0.1:${ports.http}`,
      EVENTLINE_METRICS_ADDR: `127.0.0.1:${ports.metrics}`,
      EVENTLINE_BOOTSTRAP_API_KEY: API_KEY,
      EVENTLINE_ADMIN_TOKEN: ADMIN_TOKEN,
      EVENTLINE_LOG_LEVEL: "warn",
      ...store.env,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  let exited = null;
  const exit = new Promise((resolve) => child.once("exit", (code, signal) => resolve((exited = code ?? signal))));
  const server = {
    ports,
    url: `http://127.0.0.1:${ports.http}`,
    async stop() {
      if (exited === null) child.kill("SIGTERM");
      await exit;
    },
  };
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exited !== null) throw new Error(`eventline serve exited early with ${exited}`);
    try {
      if ((await fetch(`${server.url}/readyz`)).ok) return server;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await server.stop();
  throw new Error("eventline serve did not become ready within 60 s");
}

/**
 * One REST call as a script would make it: `{ status, body }`. `auth` is an API key, or
 * `{ admin: token }` for the admin token.
 */
export async function rest(server, path, { params = {}, auth = API_KEY, method = "GET", body } = {}) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) for (const item of [value].flat()) search.append(name, String(item));
  const headers = typeof auth === "string" ? { "x-api-key": auth } : { authorization: `Bearer ${auth.admin}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const query = search.toString();
  const response = await fetch(`${server.url}${path}${query ? `?${query}` : ""}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

/** Like `rest`, but fails unless the answer is 2xx. */
export async function ok(server, path, options) {
  const answer = await rest(server, path, options);
  if (answer.status >= 300) throw new Error(`${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}
