import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate, timestampFromDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { Event } from "../gen/eventline/v1/event_pb.js";
import {
  Interval,
  Measure,
  PropertyGroupKind as ProtoGroupKind,
  RetentionInterval,
  type FunnelStep as ProtoFunnelStep,
  type PropertyGroup as ProtoPropertyGroup,
  type QueryService,
} from "../gen/eventline/v1/query_pb.js";
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

/** What a count or a series counts: events, or the distinct `userId`s among them. */
export type MeasureName = "events" | "uniqueUsers";

const MEASURES: Record<MeasureName, Measure> = {
  events: Measure.EVENTS,
  uniqueUsers: Measure.UNIQUE_USERS,
};

/** The width of a retention cohort: a UTC day, or 7 UTC days from the window's first day. */
export type RetentionIntervalName = "day" | "week";

const RETENTION_INTERVALS: Record<RetentionIntervalName, RetentionInterval> = {
  day: RetentionInterval.DAY,
  week: RetentionInterval.WEEK,
};

/**
 * Which events (or funnel users) a group holds: those whose `groupByProperty` has the
 * group's value, those without the property, or those whose value is not among the
 * `groupLimit` most frequent ones.
 */
export type PropertyGroupKind = "value" | "missing" | "other";

const GROUP_KINDS: Partial<Record<ProtoGroupKind, PropertyGroupKind>> = {
  [ProtoGroupKind.VALUE]: "value",
  [ProtoGroupKind.MISSING]: "missing",
  [ProtoGroupKind.OTHER]: "other",
};

/**
 * The part of a count whose `groupByProperty` had one value. `value` is that JSON value
 * (`"pro"`, `5`, `true`, `null`, `{ a: 1 }`) for kind "value", undefined for the other
 * kinds. Values compare as JSON: the string "5" and the number 5 are two groups.
 */
export interface PropertyGroup {
  kind: PropertyGroupKind;
  value: JsonValue | undefined;
  count: number;
}

/** A breakdown by a top-level property's value. */
export interface GroupByOptions {
  /** Split the count by this top-level property. */
  groupByProperty?: string;
  /** How many values get a group of their own (1 to 100, default 10); the rest are "other". */
  groupLimit?: number;
}

export interface CountOptions extends Window, GroupByOptions {
  eventType?: string;
  /** "events" (the default) or "uniqueUsers"; a breakdown counts events only. */
  measure?: MeasureName;
}

/** A count, whether it is exact, and with `groupByProperty` its groups. */
export interface EventCount {
  /** Events, or unique users with `measure: "uniqueUsers"`. */
  count: number;
  /** False when unique users were estimated (over more than 100,000 events). */
  exact: boolean;
  /** With groupByProperty: per value, largest first (ties by value), then "missing", then "other"; no empty groups. */
  groups?: PropertyGroup[];
}

export interface TopEventTypesOptions extends Window, GroupByOptions {
  /** How many types (1 to 1000, default 10). */
  limit?: number;
}

/** One event type and its count; with `groupByProperty`, its count per value. */
export interface EventTypeCount {
  eventType: string;
  count: number;
  groups?: PropertyGroup[];
}

export interface TimeseriesOptions extends Window, GroupByOptions {
  interval: IntervalName;
  eventType?: string;
  /** "events" (the default) or "uniqueUsers", counted per bucket; a breakdown counts events only. */
  measure?: MeasureName;
}

/** One bucket: its aligned UTC start and its count; with `groupByProperty`, every group of the window, zeros included. */
export interface TimeseriesBucket {
  startTime: Date;
  count: number;
  groups?: PropertyGroup[];
}

/** Every bucket of the window, oldest first, and whether every count is exact. */
export interface Timeseries {
  buckets: TimeseriesBucket[];
  exact: boolean;
}

export interface FunnelOptions extends Window, GroupByOptions {
  /** The event type of each step, in order: 2 to 10 of them. */
  steps: string[];
  /** How long after entering (in milliseconds) a user has to finish: default 30 days, at most 90 days. */
  conversionWindowMs?: number;
  /** Equality on top-level properties of every step's events: `{ plan: "pro" }` or `["plan=pro"]`. */
  properties?: EventFilter["properties"];
}

/** One step and the users who reached it (and every step before it). */
export interface FunnelStep {
  eventType: string;
  users: number;
}

/** The funnel of the users whose entering event had one value of `groupByProperty`. */
export interface FunnelGroup {
  kind: PropertyGroupKind;
  value: JsonValue | undefined;
  steps: FunnelStep[];
}

/** A funnel: one entry per requested step; with `groupByProperty`, one funnel per value. */
export interface Funnel {
  steps: FunnelStep[];
  /** Most entering users first (ties by value), then "missing", then "other"; their steps add up to `steps`. */
  groups?: FunnelGroup[];
}

export interface RetentionOptions extends Window {
  /** The event that puts a user in a cohort (signup, say). */
  startEventType: string;
  /** The event that counts as coming back; may equal startEventType. */
  returnEventType: string;
  /** Cohort width; counted from startTime rounded down to a UTC day. */
  interval: RetentionIntervalName;
}

/** The users whose first start event fell in the interval starting at `startTime`, and when they came back. */
export interface RetentionCohort {
  startTime: Date;
  users: number;
  /** `returned[i]`: of them, those who did the return event `i` intervals after their own (0: their own interval). */
  returned: number[];
}

const MAX_EVENT_TYPE_CHARS = 128;
const MAX_PROPERTY_CHARS = 128;
const MAX_TOP_LIMIT = 1000;
const MAX_GROUP_LIMIT = 100;
const MAX_FUNNEL_STEPS = 10;
const MAX_CONVERSION_WINDOW_MS = 90 * 86_400_000;
// Rust's char::is_control, which the server applies: the Cc category.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Reconnects of an export or tail in a row without receiving an event, before it throws. */
const MAX_RESUME_ATTEMPTS = 10;

function date(timestamp: Timestamp | undefined): Date | undefined {
  return timestamp === undefined ? undefined : timestampDate(timestamp);
}

function stamp(field: string, value: Date | undefined): Timestamp | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw new TypeError(`${field}: must be a valid Date, got ${String(value)}`);
  }
  return timestampFromDate(value);
}

/** The window's timestamps; `[startTime, endTime)` must not be empty. */
function windowFields(options: Window) {
  const startTime = stamp("startTime", options.startTime);
  const endTime = stamp("endTime", options.endTime);
  if (options.startTime !== undefined && options.endTime !== undefined && options.startTime >= options.endTime) {
    throw new RangeError("startTime: must be before endTime");
  }
  return { startTime, endTime, minWatermark: options.minWatermark ?? "" };
}

function text(field: string, value: unknown, max: number): string {
  if (typeof value !== "string") throw new TypeError(`${field}: must be a string, got ${typeof value}`);
  const length = [...value].length;
  if (length < 1 || length > max) throw new RangeError(`${field}: must be 1 to ${max} characters, got ${length}`);
  if (CONTROL.test(value)) throw new RangeError(`${field}: must not contain control characters`);
  return value;
}

function optionalEventType(field: string, value: string | undefined): string {
  return value === undefined || value === "" ? "" : text(field, value, MAX_EVENT_TYPE_CHARS);
}

function integer(field: string, value: unknown, low: number, high: number): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`${field}: must be an integer, got ${String(value)}`);
  }
  if (value < low || value > high) throw new RangeError(`${field}: must be ${low} to ${high}, got ${value}`);
  return value;
}

function choice<K extends string, V>(field: string, table: Record<K, V>, value: unknown): V {
  if (typeof value !== "string" || !Object.hasOwn(table, value)) {
    const names = Object.keys(table).map((name) => JSON.stringify(name));
    throw new RangeError(`${field}: must be ${names.slice(0, -1).join(", ")} or ${names.at(-1)}, got ${String(value)}`);
  }
  return table[value as K];
}

function groupByFields(options: GroupByOptions): { groupByProperty: string; groupLimit: number } {
  if (options.groupByProperty === undefined || options.groupByProperty === "") {
    if (options.groupLimit !== undefined) throw new RangeError("groupLimit: needs groupByProperty");
    return { groupByProperty: "", groupLimit: 0 };
  }
  return {
    groupByProperty: text("groupByProperty", options.groupByProperty, MAX_PROPERTY_CHARS),
    groupLimit: options.groupLimit === undefined ? 0 : integer("groupLimit", options.groupLimit, 1, MAX_GROUP_LIMIT),
  };
}

/** The measure and the breakdown of a count or a series, which do not combine. */
function countedFields(options: GroupByOptions & { measure?: MeasureName }) {
  const measure = choice("measure", MEASURES, options.measure ?? "events");
  const groups = groupByFields(options);
  if (groups.groupByProperty !== "" && measure === Measure.UNIQUE_USERS) {
    throw new RangeError('groupByProperty: cannot be combined with measure "uniqueUsers"');
  }
  return { measure, ...groups };
}

function conversionWindow(value: unknown): Duration | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new TypeError(`conversionWindowMs: must be a number of milliseconds, got ${String(value)}`);
  }
  if (value <= 0 || value > MAX_CONVERSION_WINDOW_MS) {
    throw new RangeError(`conversionWindowMs: must be more than 0 and at most 90 days (${MAX_CONVERSION_WINDOW_MS}), got ${value}`);
  }
  return durationFromMs(value);
}

function funnelSteps(steps: unknown): string[] {
  if (!Array.isArray(steps)) throw new TypeError(`steps: must be an array of event types, got ${typeof steps}`);
  if (steps.length < 2 || steps.length > MAX_FUNNEL_STEPS) {
    throw new RangeError(`steps: must hold 2 to ${MAX_FUNNEL_STEPS} event types, got ${steps.length}`);
  }
  return steps.map((step, index) => text(`steps[${index}]`, step, MAX_EVENT_TYPE_CHARS));
}

function groupKind(kind: ProtoGroupKind): PropertyGroupKind {
  const name = GROUP_KINDS[kind];
  if (name === undefined) throw new Error(`the server sent a group of unknown kind ${kind}`);
  return name;
}

function groupValue(kind: PropertyGroupKind, value: string): JsonValue | undefined {
  return kind === "value" && value !== "" ? (JSON.parse(value) as JsonValue) : undefined;
}

function propertyGroups(groups: ProtoPropertyGroup[]): PropertyGroup[] {
  return groups.map((group) => {
    const kind = groupKind(group.kind);
    return { kind, value: groupValue(kind, group.value), count: Number(group.count) };
  });
}

/** `{ groups }` when the request asked for a breakdown, `{}` otherwise. */
function withGroups<T>(asked: boolean, groups: T[]): { groups?: T[] } {
  return asked ? { groups } : {};
}

function stepCounts(steps: ProtoFunnelStep[]): FunnelStep[] {
  return steps.map((step) => ({ eventType: step.eventType, users: Number(step.users) }));
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

function windowOf(options: Window): Window {
  return { startTime: options.startTime, endTime: options.endTime, minWatermark: options.minWatermark };
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
          startTime: stamp("startTime", options.startTime),
          endTime: stamp("endTime", options.endTime),
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

  /** The number of matching events in the window, or of unique users among them with `measure: "uniqueUsers"`. */
  async countEvents(options: Window & { eventType?: string; measure?: MeasureName } = {}): Promise<number> {
    return (await this.count({ eventType: options.eventType, measure: options.measure, ...windowOf(options) })).count;
  }

  /**
   * The count in the window (default: 30 days) with whether it is exact; with
   * `groupByProperty`, broken down by that top-level property's value.
   */
  async count(options: CountOptions = {}): Promise<EventCount> {
    const counted = countedFields(options);
    const response = await this.client.countEvents({
      eventType: optionalEventType("eventType", options.eventType),
      ...windowFields(options),
      ...counted,
    });
    return {
      count: Number(response.count),
      exact: response.exact,
      ...withGroups(counted.groupByProperty !== "", propertyGroups(response.groups)),
    };
  }

  /** The most frequent event types in the window, by descending count (ties by name); with `groupByProperty`, each type's count per value. */
  async topEventTypes(options: TopEventTypesOptions = {}): Promise<EventTypeCount[]> {
    const groups = groupByFields(options);
    const response = await this.client.topEventTypes({
      ...windowFields(options),
      limit: options.limit === undefined ? 0 : integer("limit", options.limit, 1, MAX_TOP_LIMIT),
      ...groups,
    });
    return response.eventTypes.map((row) => ({
      eventType: row.eventType,
      count: Number(row.count),
      ...withGroups(groups.groupByProperty !== "", propertyGroups(row.groups)),
    }));
  }

  /** Counts per UTC bucket, oldest first; empty buckets are 0. The buckets of `series`. */
  async timeseries(options: TimeseriesOptions): Promise<TimeseriesBucket[]> {
    return (await this.series(options)).buckets;
  }

  /**
   * Counts per UTC `interval` bucket, the first holding startTime, empty ones 0, and
   * whether every count is exact. `measure` and `groupByProperty` as in `count`: unique
   * users are counted per bucket, and a breakdown lists the same groups (the window's
   * most frequent values) in every bucket.
   */
  async series(options: TimeseriesOptions): Promise<Timeseries> {
    const interval = choice("interval", INTERVALS, options?.interval);
    const counted = countedFields(options);
    const response = await this.client.eventTimeseries({
      eventType: optionalEventType("eventType", options.eventType),
      ...windowFields(options),
      interval,
      ...counted,
    });
    const grouped = counted.groupByProperty !== "";
    return {
      buckets: response.buckets.map((bucket) => ({
        startTime: date(bucket.startTime)!,
        count: Number(bucket.count),
        ...withGroups(grouped, propertyGroups(bucket.groups)),
      })),
      exact: response.exact,
    };
  }

  /**
   * The users who went through `steps` in order. A user enters at their first `steps[0]`
   * event in the window (default: 30 days); each next step is a later (or simultaneous)
   * event of its type at most `conversionWindowMs` after entering, possibly after
   * endTime. Events without a userId are left out. `properties` filters every step's
   * events; `groupByProperty` splits the funnel by that property of the entering event.
   */
  async funnel(options: FunnelOptions): Promise<Funnel> {
    const steps = funnelSteps(options?.steps);
    const conversion = conversionWindow(options.conversionWindowMs);
    const groups = groupByFields(options);
    const response = await this.client.funnel({
      steps,
      conversionWindow: conversion,
      ...windowFields(options),
      propertyFilters: propertyFilters(options.properties),
      ...groups,
    });
    return {
      steps: stepCounts(response.steps),
      ...withGroups(
        groups.groupByProperty !== "",
        response.groups.map((group) => {
          const kind = groupKind(group.kind);
          return { kind, value: groupValue(kind, group.value), steps: stepCounts(group.steps) };
        }),
      ),
    };
  }

  /**
   * One cohort per `interval` of the window (default: 30 days; startTime rounded down to
   * a UTC day), oldest first: the users whose first `startEventType` event fell in it,
   * and per interval from theirs to the last, how many did `returnEventType` in it (in
   * their own interval, at or after that first start event). Events without a userId
   * are left out.
   */
  async retention(options: RetentionOptions): Promise<RetentionCohort[]> {
    const startEventType = text("startEventType", options?.startEventType, MAX_EVENT_TYPE_CHARS);
    const returnEventType = text("returnEventType", options.returnEventType, MAX_EVENT_TYPE_CHARS);
    const interval = choice("interval", RETENTION_INTERVALS, options.interval);
    const response = await this.client.retention({
      startEventType,
      returnEventType,
      interval,
      ...windowFields(options),
    });
    return response.cohorts.map((cohort) => ({
      startTime: date(cohort.startTime)!,
      users: Number(cohort.users),
      returned: cohort.returned.map(Number),
    }));
  }

  /** Every matching event, oldest first, each with its cursor; resumes after a disconnect. */
  exportEvents(options: ExportOptions = {}): AsyncGenerator<CursorEvent> {
    const fields = { ...filterFields(options), startTime: stamp("startTime", options.startTime), endTime: stamp("endTime", options.endTime) };
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
    const fields = { ...filterFields(options), startTime: stamp("startTime", options.startTime) };
    return resumable(
      (cursor, signal) => this.client.tailEvents({ ...fields, cursor }, { signal }),
      options.cursor ?? "",
      options.signal,
    );
  }
}
