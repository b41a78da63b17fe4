import type { JsonObject } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { Event } from "../gen/eventline/v1/event_pb.js";
import { Interval, type QueryService } from "../gen/eventline/v1/query_pb.js";
import { isRetryable, retryDelayMs, sleep } from "../core/retry.js";

/** A stored event as the query methods return it. */
export interface StoredEvent {
  eventId: string;
  eventType: string;
  /** Empty when the event has none. */
  userId: string;
  sessionId: string;
  timestamp: Date;
  properties: JsonObject;
  /** When the server received it. */
  receivedAt: Date | undefined;
  /** The timestamp as the client sent it, when clock-skew correction moved it. */
  clientTimestamp: Date | undefined;
}

/** An event of an export or a tail, with the cursor that resumes after it. */
export interface CursorEvent {
  event: StoredEvent;
  cursor: string;
}

/** Filters shared by the listing, export and tail. */
export interface EventFilter {
  eventType?: string;
  userId?: string;
  /** Equality on top-level properties: `{ plan: "pro", seats: 5 }` or `["plan=pro"]`. */
  properties?: Record<string, string | number | boolean | null> | string[];
}

/** A `[startTime, endTime)` window; the server defaults to the last 30 days. */
export interface Window {
  startTime?: Date;
  endTime?: Date;
  /** Wait (at most 5 s) until the writes behind this ingest watermark are visible. */
  minWatermark?: string;
}

export interface ListEventsOptions extends EventFilter, Window {
  /** Events per page (1 to 1000, default 100); the iterator crosses pages by itself. */
  pageSize?: number;
  signal?: AbortSignal;
}

export interface ExportOptions extends EventFilter {
  startTime?: Date;
  endTime?: Date;
  /** Resume after the event that carried this cursor. */
  cursor?: string;
  signal?: AbortSignal;
}

export interface TailOptions extends EventFilter {
  /** Replay from this time; with neither this nor a cursor the tail starts now. */
  startTime?: Date;
  /** Resume after the event that carried this cursor; wins over startTime. */
  cursor?: string;
  signal?: AbortSignal;
}

export type IntervalName = "minute" | "hour" | "day";

const INTERVALS: Record<IntervalName, Interval> = {
  minute: Interval.MINUTE,
  hour: Interval.HOUR,
  day: Interval.DAY,
};

/** Reconnects of an export or tail in a row without receiving an event, before it throws. */
const MAX_RESUME_ATTEMPTS = 10;

function date(timestamp: Timestamp | undefined): Date | undefined {
  return timestamp === undefined ? undefined : timestampDate(timestamp);
}

function stamp(value: Date | undefined): Timestamp | undefined {
  return value === undefined ? undefined : timestampFromDate(value);
}

function fromProto(event: Event | undefined): StoredEvent {
  return {
    eventId: event?.eventId ?? "",
    eventType: event?.eventType ?? "",
    userId: event?.userId ?? "",
    sessionId: event?.sessionId ?? "",
    timestamp: date(event?.timestamp) ?? new Date(0),
    properties: event?.properties ?? {},
    receivedAt: date(event?.receivedAt),
    clientTimestamp: date(event?.clientTimestamp),
  };
}

function propertyFilters(properties: EventFilter["properties"]): string[] {
  if (properties === undefined) return [];
  if (Array.isArray(properties)) return properties;
  return Object.entries(properties).map(([key, value]) =>
    typeof value === "string" ? `${key}=${value}` : `${key}=${JSON.stringify(value)}`,
  );
}

function filterFields(filter: EventFilter) {
  return {
    eventType: filter.eventType ?? "",
    userId: filter.userId ?? "",
    propertyFilters: propertyFilters(filter.properties),
  };
}

/**
 * Iterates an export or tail, reconnecting after a retryable error from the last cursor
 * it delivered, so the caller sees every event once, without a gap.
 */
async function* resumable(
  open: (cursor: string, signal: AbortSignal | undefined) => AsyncIterable<{ event?: Event; cursor: string }>,
  firstCursor: string,
  signal: AbortSignal | undefined,
): AsyncGenerator<CursorEvent> {
  let cursor = firstCursor;
  let failures = 0;
  for (;;) {
    try {
      for await (const message of open(cursor, signal)) {
        failures = 0;
        cursor = message.cursor;
        yield { event: fromProto(message.event), cursor };
      }
      return;
    } catch (error) {
      failures++;
      if (signal?.aborted || !isRetryable(error) || failures > MAX_RESUME_ATTEMPTS) throw error;
      await sleep(retryDelayMs(error, failures), signal);
    }
  }
}

/** Typed query methods over QueryService. */
export class Queries {
  constructor(private readonly client: Client<typeof QueryService>) {}

  /** Every matching event, newest first, fetched page by page. */
  async *listEvents(options: ListEventsOptions = {}): AsyncGenerator<StoredEvent> {
    let pageToken = "";
    do {
      const page = await this.client.listEvents(
        {
          ...filterFields(options),
          startTime: stamp(options.startTime),
          endTime: stamp(options.endTime),
          pageSize: options.pageSize ?? 0,
          pageToken,
          minWatermark: options.minWatermark ?? "",
        },
        { signal: options.signal },
      );
      for (const event of page.events) yield fromProto(event);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }

  /** The number of matching events in the window. */
  async countEvents(options: Window & { eventType?: string } = {}): Promise<number> {
    const response = await this.client.countEvents({
      eventType: options.eventType ?? "",
      startTime: stamp(options.startTime),
      endTime: stamp(options.endTime),
      minWatermark: options.minWatermark ?? "",
    });
    return Number(response.count);
  }

  /** The most frequent event types in the window, by descending count. */
  async topEventTypes(options: Window & { limit?: number } = {}): Promise<{ eventType: string; count: number }[]> {
    const response = await this.client.topEventTypes({
      startTime: stamp(options.startTime),
      endTime: stamp(options.endTime),
      limit: options.limit ?? 0,
      minWatermark: options.minWatermark ?? "",
    });
    return response.eventTypes.map((row) => ({ eventType: row.eventType, count: Number(row.count) }));
  }

  /** Counts per UTC bucket, oldest first; empty buckets are 0. */
  async timeseries(
    options: Window & { interval: IntervalName; eventType?: string },
  ): Promise<{ startTime: Date; count: number }[]> {
    const interval = INTERVALS[options.interval];
    if (interval === undefined) {
      throw new RangeError(`interval: must be "minute", "hour" or "day", got ${String(options.interval)}`);
    }
    const response = await this.client.eventTimeseries({
      eventType: options.eventType ?? "",
      startTime: stamp(options.startTime),
      endTime: stamp(options.endTime),
      interval,
      minWatermark: options.minWatermark ?? "",
    });
    return response.buckets.map((bucket) => ({ startTime: date(bucket.startTime)!, count: Number(bucket.count) }));
  }

  /** Every matching event, oldest first, each with its cursor; resumes after a disconnect. */
  exportEvents(options: ExportOptions = {}): AsyncGenerator<CursorEvent> {
    const fields = { ...filterFields(options), startTime: stamp(options.startTime), endTime: stamp(options.endTime) };
    return resumable(
      (cursor, signal) => this.client.exportEvents({ ...fields, cursor }, { signal }),
      options.cursor ?? "",
      options.signal,
    );
  }

  /**
   * History from a cursor or start time, then new events live, each with its cursor;
   * reconnects after a disconnect without a gap or a repeat. Ends when `signal` aborts
   * (or the caller breaks out of the loop).
   */
  tail(options: TailOptions = {}): AsyncGenerator<CursorEvent> {
    const fields = { ...filterFields(options), startTime: stamp(options.startTime) };
    return resumable(
      (cursor, signal) => this.client.tailEvents({ ...fields, cursor }, { signal }),
      options.cursor ?? "",
      options.signal,
    );
  }
}
