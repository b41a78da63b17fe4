/**
 * @eventline/client/browser: the producer for web pages over gRPC-Web (unary
 * IngestBatch: browsers cannot stream requests), framed by hand over fetch to stay small. Unsent events survive a reload in
 * localStorage, and go out with `fetch(…, { keepalive: true })` when the page is hidden.
 */
import type { QueuedEvent, TrackOptions } from "../core/event.js";
import {
  ProducerCore,
  type Batch,
  type EventOutcome,
  type ProducerCounts,
  type ProducerOptions,
  type ProducerStats,
} from "../core/producer.js";
import { isOverload, isRetryable, retryDelayMs, sleep, unrefTimeout } from "../core/retry.js";
import { decodeIngestBatchResults, encodeIngestBatch } from "./wire.js";
import { grpcWebUnary } from "./grpc-web.js";
import { sendWithKeepalive } from "./keepalive.js";
import { EventStore } from "./storage.js";

export { ValidationError, type TrackOptions } from "../core/event.js";
export type { ProducerCounts, ProducerOptions, ProducerStats, Rejection } from "../core/producer.js";

export interface BrowserClientOptions extends ProducerOptions {
  /** The server's gRPC port, which also speaks gRPC-Web: `https://events.example.com:50051`. */
  baseUrl: string;
  /** The REST port, for the keepalive path on page exit: `https://events.example.com:8080`. */
  restUrl: string;
  /** A write-only (ingest scope) key: safe to ship in a page. */
  apiKey: string;
  /** Unsent events kept in localStorage across page loads, at most; default 1,000. */
  maxStoredEvents?: number;
  /** The localStorage key; default `eventline:<baseUrl>`. */
  storageKey?: string;
}

/** The browser producer's stats: the producer's plus what localStorage could not keep. */
export interface BrowserStats extends ProducerStats {
  /** Unsent events that did not fit in localStorage at the last save. */
  notStored: number;
}

/** Saves are coalesced: at most one localStorage write per this many ms. */
const SAVE_DELAY_MS = 250;

/** The browser producer: `track`, `flush`, `shutdown`, `stats`. */
export class BrowserClient {
  private readonly producer: ProducerCore;
  private readonly store: EventStore;
  private saveTimer: ReturnType<typeof setTimeout> | undefined;
  private notStored = 0;
  private readonly keptAlive = new Set<string>();
  private readonly restUrl: string;
  private readonly apiKey: string;

  constructor(options: BrowserClientOptions) {
    if (typeof options?.apiKey !== "string" || options.apiKey === "") {
      throw new TypeError("apiKey: must be a non-empty string");
    }
    this.apiKey = options.apiKey;
    this.restUrl = checkedUrl("restUrl", options.restUrl).replace(/\/+$/, "");
    const baseUrl = checkedUrl("baseUrl", options.baseUrl).replace(/\/+$/, "");
    const ingestBatch = (batch: Batch, signal: AbortSignal) =>
      grpcWebUnary(
        baseUrl,
        "/eventline.v1.IngestService/IngestBatch",
        { "x-api-key": options.apiKey },
        encodeIngestBatch(batch.events, Date.now()),
        signal,
      ).then(decodeIngestBatchResults);
    this.producer = new ProducerCore(
      options,
      (bytes) => crypto.getRandomValues(bytes),
      batchSender(ingestBatch, () => this.scheduleSave()),
    );
    this.store = new EventStore(options.storageKey ?? `eventline:${baseUrl}`, options.maxStoredEvents ?? 1000);
    for (const event of this.store.load()) this.producer.restore(event);
    if (typeof addEventListener === "function") {
      addEventListener("pagehide", () => this.pageHidden());
      addEventListener("pageshow", () => this.keptAlive.clear());
      addEventListener("visibilitychange", () => {
        if (document.visibilityState === "hidden") this.pageHidden();
        else this.keptAlive.clear();
      });
    }
  }

  /**
   * Queues an event and returns its id at once; never throws for a network problem.
   * Throws a ValidationError naming the field for an event the server would reject.
   */
  track(eventType: string, options?: TrackOptions): string {
    const eventId = this.producer.track(eventType, options);
    this.scheduleSave();
    return eventId;
  }

  /** Resolves true once everything tracked before the call is acknowledged; false at the timeout. */
  flush(timeoutMs?: number): Promise<boolean> {
    return this.producer.flush(timeoutMs);
  }

  /** Flushes (at most `timeoutMs`), stops sending and returns the final counts. */
  async shutdown(timeoutMs?: number): Promise<ProducerCounts> {
    const counts = await this.producer.shutdown(timeoutMs);
    this.save();
    return counts;
  }

  stats(): BrowserStats {
    return { ...this.producer.stats(), notStored: this.notStored };
  }

  /** Everything not yet acknowledged, oldest first. */
  private unsent(): QueuedEvent[] {
    const events = this.producer.unacknowledged().flatMap((batch) => batch.events);
    events.push(...this.producer.queuedEvents());
    return events.sort((left, right) => left.index - right.index);
  }

  private scheduleSave(): void {
    this.saveTimer ??= unrefTimeout(() => this.save(), SAVE_DELAY_MS);
  }

  private save(): void {
    clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    this.notStored = this.store.save(this.unsent());
  }

  /**
   * The page may be gone in a moment: store what is unsent (so the next load resends
   * it) and send it over keepalive requests, which outlive the page. Events that arrive
   * both ways are stored once: they carry the same ids.
   */
  private pageHidden(): void {
    const unsent = this.unsent();
    this.notStored = this.store.save(unsent);
    const fresh = unsent.filter((event) => !this.keptAlive.has(event.eventId));
    for (const event of sendWithKeepalive(this.restUrl, this.apiKey, fresh)) this.keptAlive.add(event.eventId);
  }
}

/** Creates the browser producer; see BrowserClientOptions. */
export function createClient(options: BrowserClientOptions): BrowserClient {
  return new BrowserClient(options);
}

function checkedUrl(name: string, url: unknown): string {
  if (typeof url !== "string" || !/^https?:\/\/[^/]/.test(url)) {
    throw new TypeError(`${name}: must be an http:// or https:// URL, got ${JSON.stringify(url)}`);
  }
  return url;
}

/**
 * Sends each batch as one IngestBatch call, at most maxInFlight at once; a failed call
 * is retried after RetryInfo's delay or backoff with full jitter, with the same ids.
 */
function batchSender(
  ingestBatch: (batch: Batch, signal: AbortSignal) => Promise<EventOutcome[]>,
  settled: () => void,
): (core: ProducerCore) => Promise<void> {
  const send = async (core: ProducerCore, batch: Batch) => {
    for (let failures = 1; ; failures++) {
      try {
        batch.firstSentMs ??= Date.now();
        core.acknowledge(batch.sequence, await ingestBatch(batch, core.stopSignal));
        return settled();
      } catch (error) {
        if (core.stopSignal.aborted) return;
        if (!isRetryable(error) || Date.now() - batch.firstSentMs! > core.maxRetryDurationMs) {
          core.giveUp(batch, error);
          return settled();
        }
        if (isOverload(error)) core.overloaded();
        const delay = retryDelayMs(error, failures);
        core.retrying(error, delay);
        await sleep(delay, core.stopSignal);
      }
    }
  };
  return async (core) => {
    for (;;) {
      const batch = await core.nextBatch(undefined, false);
      if (batch === undefined) return;
      void send(core, batch);
    }
  };
}
