import type { QueuedEvent } from "../core/event.js";
import { restEvent } from "./storage.js";

/**
 * Browsers allow at most 64 KiB of keepalive request bodies in flight per page; stay
 * under it, leaving room for anything else the page sends on its way out.
 */
export const KEEPALIVE_BUDGET_BYTES = 60 * 1024;
/** One request's body at most; a smaller request fits in the budget more often. */
const KEEPALIVE_CHUNK_BYTES = 16 * 1024;

const encoder = new TextEncoder();

/**
 * Sends `events` to the REST `POST /v1/events:batch` with `fetch(…, { keepalive: true })`,
 * which survives the page's unload, in chunks whose sum stays under the budget. Returns
 * the events that went out; the rest stay for localStorage. Never throws.
 */
export function sendWithKeepalive(restUrl: string, apiKey: string, events: QueuedEvent[]): QueuedEvent[] {
  const sent: QueuedEvent[] = [];
  let budget = KEEPALIVE_BUDGET_BYTES;
  let chunk: string[] = [];
  let chunkEvents: QueuedEvent[] = [];
  let chunkBytes = 0;
  const post = () => {
    if (chunk.length === 0) return;
    const body = `{"events":[${chunk.join(",")}],"sent_at":"${new Date().toISOString()}"}`;
    try {
      fetch(`${restUrl}/v1/events:batch`, {
        method: "POST",
        keepalive: true,
        headers: { "content-type": "application/json", "x-api-key": apiKey },
        body,
      }).catch(() => {});
      sent.push(...chunkEvents);
    } catch {
      // Over the browser's budget after all: these stay for localStorage.
    }
    chunk = [];
    chunkEvents = [];
    chunkBytes = 0;
  };
  const overhead = 64;
  for (const event of events) {
    const json = JSON.stringify(restEvent(event));
    const bytes = encoder.encode(json).length + 1;
    if (bytes + overhead > KEEPALIVE_CHUNK_BYTES || bytes > budget) continue; // too big for keepalive
    if (chunkBytes + bytes + overhead > KEEPALIVE_CHUNK_BYTES) post();
    chunk.push(json);
    chunkEvents.push(event);
    chunkBytes += bytes;
    budget -= bytes;
  }
  post();
  return sent;
}
