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
  CountOptions,
  CursorEvent,
  EventCount,
  EventFilter,
  EventTypeCount,
  ExportOptions,
  Funnel,
  FunnelGroup,
  FunnelOptions,
  FunnelStep,
  GroupByOptions,
  IntervalName,
  ListEventsOptions,
  MeasureName,
  PropertyGroup,
  PropertyGroupKind,
  RetentionCohort,
  RetentionIntervalName,
  RetentionOptions,
  StoredEvent,
  TailOptions,
  Timeseries,
  TimeseriesBucket,
  TimeseriesOptions,
  TopEventTypesOptions,
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
  /**
   * TLS settings for an https:// baseUrl: a CA to trust instead of Node's bundled roots,
   * and a client certificate with its key for a server that requires one (mTLS).
   */
  tls?: TlsOptions;
}

/** PEM text, or its bytes as read from a file (a Buffer, or any Uint8Array). */
export type Pem = string | Uint8Array;

/** TLS settings of the Node client, passed to `http2.connect` (Node's `tls` options). */
export interface TlsOptions {
  /** PEM CA certificate(s) to trust instead of Node's bundled roots (a private CA). */
  ca?: Pem | Pem[];
  /** PEM client certificate chain, leaf first, presented when the server asks (mTLS); needs `key`. */
  cert?: Pem | Pem[];
  /** PEM private key of `cert`. */
  key?: Pem | Pem[];
}

/** An eventline client: the producer (`track`, `flush`, `shutdown`, `stats`) and queries. */
export class EventlineClient extends Queries {
  private readonly producer: ProducerCore;
  private readonly onBeforeExit: () => void;

  constructor(options: ClientOptions) {
    if (typeof options?.apiKey !== "string" || options.apiKey === "") {
      throw new TypeError("apiKey: must be a non-empty string");
    }
    if (options.transport !== undefined && options.tls !== undefined) {
      throw new TypeError("tls: has no effect with transport (configure TLS on that transport)");
    }
    const transport = options.transport ?? grpcTransport(checkedUrl(options.baseUrl), options.apiKey, options.tls);
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

function grpcTransport(baseUrl: string, apiKey: string, tls: TlsOptions | undefined): Transport {
  const interceptors = [apiKeyHeader(apiKey)];
  if (tls === undefined) return createGrpcTransport({ baseUrl, interceptors });
  return createGrpcTransport({ baseUrl, interceptors, nodeOptions: nodeTlsOptions(baseUrl, tls) });
}

type NodePem = string | Buffer | (string | Buffer)[];

/** Checks `tls` and turns it into the options of `http2.connect` (Node's tls options). */
function nodeTlsOptions(baseUrl: string, tls: TlsOptions): { ca?: NodePem; cert?: NodePem; key?: NodePem } {
  if (tls === null || typeof tls !== "object") throw new TypeError("tls: must be an object { ca?, cert?, key? }");
  if (!baseUrl.startsWith("https://")) throw new TypeError("tls: needs an https:// baseUrl");
  const unknown = Object.keys(tls).filter((name) => !["ca", "cert", "key"].includes(name));
  if (unknown.length > 0) throw new TypeError(`tls.${unknown[0]}: unknown option (ca, cert and key are)`);
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new TypeError(tls.cert === undefined ? "tls.cert: required with tls.key" : "tls.key: required with tls.cert");
  }
  const nodeOptions: { ca?: NodePem; cert?: NodePem; key?: NodePem } = {};
  for (const name of ["ca", "cert", "key"] as const) {
    const value = tls[name];
    if (value === undefined) continue;
    const items = (Array.isArray(value) ? value : [value]).map((item: unknown) => {
      if (typeof item === "string" || Buffer.isBuffer(item)) return item;
      if (item instanceof Uint8Array) return Buffer.from(item.buffer, item.byteOffset, item.byteLength);
      throw new TypeError(`tls.${name}: must be PEM as a string or a Buffer, or an array of them`);
    });
    if (items.length === 0) throw new TypeError(`tls.${name}: an empty array`);
    nodeOptions[name] = Array.isArray(value) ? items : items[0];
  }
  return nodeOptions;
}

function apiKeyHeader(apiKey: string): Interceptor {
  return (next) => (request) => {
    request.header.set("x-api-key", apiKey);
    return next(request);
  };
}
