// Runs the real `eventline` binary ($EVENTLINE_BIN) on free ports against a fresh
// PostgreSQL database per suite, as crates/eventline/tests/common/mod.rs does.
import { spawn } from "node:child_process";
import { create, createFileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { createClient as createConnectClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { binary, freePort, freshDatabase as freshDatabaseOf } from "../../../scripts/lib/test-process.mjs";

/** The bootstrap key the servers start with (ingest + query scope). */
export const API_KEY = "elk_test_bootstrap_key_0123456789abcdef";

export { binary, freePort };

/** A fresh database `eventline_test_ts_…`; `drop()` removes it. */
export function freshDatabase() {
  return freshDatabaseOf("ts");
}

// grpc.health.v1, described at run time: the SDK ships no health client.
const healthFile = create(FileDescriptorProtoSchema, {
  name: "grpc/health/v1/health.proto",
  package: "grpc.health.v1",
  syntax: "proto3",
  messageType: [
    { name: "HealthCheckRequest", field: [{ name: "service", jsonName: "service", number: 1, type: 9, label: 1 }] },
    { name: "HealthCheckResponse", field: [{ name: "status", jsonName: "status", number: 1, type: 5, label: 1 }] },
  ],
  service: [
    {
      name: "Health",
      method: [{ name: "Check", inputType: ".grpc.health.v1.HealthCheckRequest", outputType: ".grpc.health.v1.HealthCheckResponse" }],
    },
  ],
});
const Health = createFileRegistry(healthFile, () => undefined).getService("grpc.health.v1.Health");

async function serving(grpcUrl, tls) {
  const client = createConnectClient(Health, createGrpcTransport({ baseUrl: grpcUrl, ...(tls && { nodeOptions: tls }) }));
  try {
    return (await client.check({ service: "" }, { timeoutMs: 1000 })).status === 1;
  } catch {
    return false;
  }
}

/**
 * Starts `eventline serve` and waits for SERVING. `ports` pins the ports (a restart
 * reuses them); `env` adds settings such as EVENTLINE_WRITER_QUEUE_EVENTS; `args` adds
 * flags to `serve`. With `tls` (Node's `{ ca, cert, key }` for the health check) the
 * server is expected to speak TLS: its URLs are https://localhost:….
 */
export async function startServer(databaseUrl, { ports, env = {}, args = [], tls } = {}) {
  const chosen = ports ?? { grpc: await freePort(), http: await freePort(), metrics: await freePort() };
  const child = spawn(binary(), ["serve", ...args], {
    env: {
      ...process.env,
      EVENTLINE_DATABASE_URL: databaseUrl,
      EVENTLINE_GRPC_ADDR: `127.0.0.1:${chosen.grpc}`,
      EVENTLINE_HTTP_ADDR: `127.0.0.1:${chosen.http}`,
      EVENTLINE_METRICS_ADDR: `127.0.0.1:${chosen.metrics}`,
      EVENTLINE_BOOTSTRAP_API_KEY: API_KEY,
      EVENTLINE_LOG_LEVEL: "warn",
      ...env,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  let exited = null;
  const exit = new Promise((resolve) => child.once("exit", (code, signal) => resolve((exited = code ?? signal))));
  const server = {
    ports: chosen,
    grpcUrl: tls ? `https://localhost:${chosen.grpc}` : `http://127.0.0.1:${chosen.grpc}`,
    restUrl: tls ? `https://localhost:${chosen.http}` : `http://127.0.0.1:${chosen.http}`,
    metricsUrl: `http://127.0.0.1:${chosen.metrics}`,
    /** SIGKILL: no drain, no goodbye. */
    async kill() {
      if (exited === null) child.kill("SIGKILL");
      await exit;
    },
    async stop() {
      if (exited === null) child.kill("SIGTERM");
      await exit;
    },
  };
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exited !== null) throw new Error(`eventline serve exited early with ${exited}`);
    if (await serving(server.grpcUrl, tls)) return server;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await server.kill();
  throw new Error("eventline serve did not become SERVING within 60 s");
}

/** The value of one Prometheus sample, such as `eventline_ingest_events_total{outcome="rejected"}`. */
export async function metric(server, sample) {
  const text = await (await fetch(`${server.metricsUrl}/metrics`)).text();
  const line = text.split("\n").find((candidate) => candidate.startsWith(`${sample} `));
  return line === undefined ? 0 : Number(line.slice(sample.length + 1));
}

/** Every stored event id, by exporting everything. */
export async function storedIds(client) {
  const ids = [];
  for await (const { event } of client.exportEvents({ startTime: new Date(Date.UTC(2000, 0, 1)) })) ids.push(event.eventId);
  return ids;
}

/** Asserts helper: ids in `stored` are exactly `expected`, each once. */
export function exactlyOnce(stored, expected) {
  const counts = new Map();
  for (const id of stored) counts.set(id, (counts.get(id) ?? 0) + 1);
  const repeated = [...counts].filter(([, count]) => count > 1).map(([id]) => id);
  const missing = [...expected].filter((id) => !counts.has(id));
  const extra = [...counts.keys()].filter((id) => !expected.has(id));
  return { repeated, missing, extra };
}
