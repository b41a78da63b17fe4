// The test page: a browser producer configured from the query string, driven by the test.
import { createClient } from "../../../dist/browser/index.js";

const params = new URLSearchParams(location.search);
const client = createClient({
  baseUrl: params.get("grpc"),
  restUrl: params.get("rest"),
  apiKey: params.get("key"),
  storageKey: params.get("storage") ?? undefined,
  flushIntervalMs: Number(params.get("interval") ?? 1000),
  maxBatch: Number(params.get("batch") ?? 500),
  onError: (error) => console.log(`eventline error: ${error}`),
});
globalThis.eventline = client;
globalThis.trackMany = (count, eventType) =>
  Array.from({ length: count }, (_, index) => client.track(eventType, { userId: "browser", properties: { index } }));
