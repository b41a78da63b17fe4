/**
 * @eventline/client for Node (≥ 18): typed queries and the producer over gRPC (HTTP/2).
 * The producer never keeps the process alive on its own and shuts down on `beforeExit`.
 */
import { webcrypto } from "node:crypto";
import { createClient as createConnectClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { IngestService } from "../gen/eventline/v1/ingest_pb.js";
import { QueryService } from "../gen/eventline/v1/query_pb.js";
import type { TrackOptions } from "../core/event.js";
import { ProducerCore, type ProducerCounts, type ProducerOptions, type ProducerStats } from "../core/producer.js";
import { bidiSender } from "./bidi.js";
import { Queries } from "./query.js";

export { ValidationError, type TrackOptions } from "../core/event.js";
export type { ProducerCounts, ProducerOptions, ProducerStats, Rejection } from "../core/producer.js";
export type {
  CursorEvent,
  EventFilter,
  ExportOptions,
  IntervalName,
  ListEventsOptions,
  StoredEvent,
  TailOptions,
  Window,
} from "./query.js";

export interface ClientOptions extends ProducerOptions {
  /** The server's gRPC address, such as `http://localhost:50051` (https:// for TLS). */
  baseUrl: string;
  /** An API key: the ingest scope to track, the query scope to read. */
  apiKey: string;
  /** How long the automatic shutdown on `beforeExit` may take; default 10,000 ms. */
  exitTimeoutMs?: number;
  /** A Connect transport to use instead of the gRPC one built from baseUrl. */
  transport?: Transport;
}

/** An eventline client: the producer (`track`, `flush`, `shutdown`, `stats`) and queries. */
export class EventlineClient extends Queries {
  private readonly producer: ProducerCore;
  private readonly onBeforeExit: () => void;

  constructor(options: ClientOptions) {
    if (typeof options?.apiKey !== "string" || options.apiKey === "") {
      throw new TypeError("apiKey: must be a non-empty string");
    }
    const transport = options.transport ?? createGrpcTransport({ baseUrl: checkedUrl(options.baseUrl), interceptors: [apiKeyHeader(options.apiKey)] });
    super(createConnectClient(QueryService, transport));
    const ingest = createConnectClient(IngestService, transport);
    this.producer = new ProducerCore(options, (bytes) => webcrypto.getRandomValues(bytes), bidiSender(ingest));
    const exitTimeoutMs = options.exitTimeoutMs ?? 10_000;
    this.onBeforeExit = () => {
      const stats = this.producer.stats();
      if (!this.producer.isClosing && stats.queued + stats.inFlight > 0) void this.shutdown(exitTimeoutMs);
    };
    process.on("beforeExit", this.onBeforeExit);
  }

  /**
   * Queues an event and returns its id at once; never waits for the network and never
   * throws for a network problem. Throws a ValidationError naming the field for an
   * event the server would reject anyway.
   */
  track(eventType: string, options?: TrackOptions): string {
    return this.producer.track(eventType, options);
  }

  /** Resolves true once everything tracked before the call is acknowledged; false at the timeout. */
  flush(timeoutMs?: number): Promise<boolean> {
    return this.producer.flush(timeoutMs);
  }

  /** Flushes (at most `timeoutMs`, default 30 s), stops the sender and returns the final counts. */
  async shutdown(timeoutMs?: number): Promise<ProducerCounts> {
    process.off("beforeExit", this.onBeforeExit);
    return this.producer.shutdown(timeoutMs);
  }

  /** The counts so far, plus what is queued and in flight. */
  stats(): ProducerStats {
    return this.producer.stats();
  }
}

/** Creates a client; see ClientOptions for the producer settings and their defaults. */
export function createClient(options: ClientOptions): EventlineClient {
  return new EventlineClient(options);
}

function checkedUrl(baseUrl: unknown): string {
  if (typeof baseUrl !== "string" || !/^https?:\/\/[^/]/.test(baseUrl)) {
    throw new TypeError(`baseUrl: must be an http:// or https:// URL, got ${JSON.stringify(baseUrl)}`);
  }
  return baseUrl;
}

function apiKeyHeader(apiKey: string): Interceptor {
  return (next) => (request) => {
    request.header.set("x-api-key", apiKey);
    return next(request);
  };
}
