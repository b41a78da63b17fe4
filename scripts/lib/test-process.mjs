// What every JavaScript suite needs to run the real `eventline` binary: the binary from
// $EVENTLINE_BIN, ports that stay free across a restart, and fresh PostgreSQL databases.
// Node built-ins only, so the SDK (clients/typescript/test), console (console/test) and
// capture (clients/capture-tests) suites share it without installing each other's
// packages.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";

export const DATABASE_URL = process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";

/** The server binary under test; throws, naming the fix, when $EVENTLINE_BIN is unset. */
export function binary() {
  const path = process.env.EVENTLINE_BIN;
  if (!path) throw new Error("EVENTLINE_BIN is not set: point it at an `eventline` binary (cargo build -p eventline)");
  return path;
}

function bindable(port) {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/**
 * A port free right now, outside the kernel's ephemeral range (32768–60999): a server
 * restarted on it after a SIGKILL must not find it taken by some client's source port.
 */
export async function freePort() {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (await bindable(port)) return port;
  }
}

/** Runs one SQL statement on $DATABASE_URL, failing on error. */
export function psql(sql) {
  execFileSync("psql", [DATABASE_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], { stdio: ["ignore", "ignore", "inherit"] });
}

/**
 * A fresh database `eventline_test_<suite>_…` (scripts/test drops leftovers by that
 * prefix): its name, its URL, and `drop()`. Checks the binary first, so a missing one
 * fails before anything is created.
 */
export function freshDatabase(suite) {
  binary();
  const name = `eventline_test_${suite}_${process.pid}_${randomBytes(4).toString("hex")}`;
  psql(`CREATE DATABASE ${name}`);
  const url = new URL(DATABASE_URL);
  url.pathname = `/${name}`;
  return { name, url: url.toString(), drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}
