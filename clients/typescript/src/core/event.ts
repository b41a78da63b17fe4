import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { uuidv7, type RandomFill } from "./uuid.js";

/** What `track()` takes besides the event type; every field is optional. */
export interface TrackOptions {
  /** The user the event belongs to, at most 256 characters. */
  userId?: string;
  /** Free-form attributes: a JSON object nesting at most 10 levels. */
  properties?: Record<string, unknown>;
  /** When the event happened; defaults to the time of the `track()` call. */
  timestamp?: Date | number;
  /** Idempotency key, 1 to 128 characters; defaults to a fresh UUIDv7. */
  eventId?: string;
  /** The session the event belongs to, at most 256 characters. */
  sessionId?: string;
}

/** An event accepted by `track()`, waiting to be sent or acknowledged. */
export interface QueuedEvent {
  eventId: string;
  eventType: string;
  userId: string;
  sessionId: string;
  /** Unix milliseconds. */
  timestampMs: number;
  properties: JsonObject | undefined;
  /** Position in the order events entered this producer (drives `flush()`). */
  index: number;
  /** Estimated encoded size, to keep batches under the message limit. */
  bytes: number;
}

/** An event the server would reject anyway; `field` names the offending field. */
export class ValidationError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "ValidationError";
    this.field = field;
  }
}

const MAX_EVENT_TYPE_CHARS = 128;
const MAX_EVENT_ID_CHARS = 128;
const MAX_ID_CHARS = 256;
const MAX_PROPERTIES_DEPTH = 10;
const MAX_EVENT_BYTES = 1024 * 1024;
const EARLIEST_MS = Date.UTC(1971, 0, 1);
const MAX_FUTURE_SKEW_MS = 60 * 60 * 1000;
// Rust's char::is_control, which the server applies: the Cc category.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function characters(text: string): number {
  let count = 0;
  for (const _ of text) count++;
  return count;
}

function checkText(field: string, value: unknown, min: number, max: number): string {
  if (typeof value !== "string") {
    throw new ValidationError(field, `must be a string, got ${typeof value}`);
  }
  const length = characters(value);
  if (length < min || length > max) {
    throw new ValidationError(field, `must be ${min} to ${max} characters, got ${length}`);
  }
  if (CONTROL.test(value)) throw new ValidationError(field, "must not contain control characters");
  return value;
}

function optionalId(field: string, value: unknown): string {
  return value === undefined || value === null || value === "" ? "" : checkText(field, value, 1, MAX_ID_CHARS);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value !== "object") return typeof value;
  return (value as object).constructor?.name ?? "object";
}

/** Copies `value` as JSON, checking what the server checks; `depth` counts containers. */
function copyJson(value: unknown, path: string, depth: number): JsonValue {
  switch (typeof value) {
    case "string":
      if (value.includes("\0")) throw new ValidationError(path, "must not contain NUL characters");
      return value;
    case "number":
      if (!Number.isFinite(value)) throw new ValidationError(path, "must be a finite number");
      return value;
    case "boolean":
      return value;
  }
  if (value === null) return null;
  if (depth + 1 > MAX_PROPERTIES_DEPTH) {
    throw new ValidationError(path, `nests deeper than ${MAX_PROPERTIES_DEPTH} levels`);
  }
  if (Array.isArray(value)) {
    return value.map((item, index) => (item === undefined ? null : copyJson(item, `${path}[${index}]`, depth + 1)));
  }
  if (isPlainObject(value)) return copyObject(value, path, depth + 1);
  throw new ValidationError(
    path,
    `must be a JSON value (string, finite number, boolean, null, array or plain object), got ${describe(value)}`,
  );
}

function copyObject(source: Record<string, unknown>, path: string, depth: number): JsonObject {
  const copy: JsonObject = {};
  for (const key of Object.keys(source)) {
    const item = source[key];
    if (item === undefined) continue; // as JSON.stringify does
    if (key.includes("\0")) throw new ValidationError(path, "keys must not contain NUL characters");
    copy[key] = copyJson(item, `${path}.${key}`, depth);
  }
  return copy;
}

function timestampMs(value: unknown, nowMs: number): number {
  if (value === undefined || value === null) return nowMs;
  const millis = value instanceof Date ? value.getTime() : value;
  if (typeof millis !== "number" || !Number.isFinite(millis)) {
    throw new ValidationError("timestamp", "must be a valid Date or Unix milliseconds");
  }
  if (millis < EARLIEST_MS) throw new ValidationError("timestamp", "is before 1971-01-01T00:00:00Z");
  if (millis > nowMs + MAX_FUTURE_SKEW_MS) {
    throw new ValidationError("timestamp", "is more than 1 hour in the future");
  }
  return millis;
}

/**
 * Checks an event as the server would and returns the copy the producer queues, with a
 * UUIDv7 id and a timestamp fixed now; throws a ValidationError naming the field.
 */
export function prepareEvent(
  eventType: unknown,
  options: TrackOptions | undefined,
  fillRandom: RandomFill,
  index: number,
): QueuedEvent {
  const type = checkText("event_type", eventType, 1, MAX_EVENT_TYPE_CHARS);
  const nowMs = Date.now();
  const given = options ?? {};
  let properties: JsonObject | undefined;
  let propertiesBytes = 0;
  if (given.properties !== undefined && given.properties !== null) {
    if (!isPlainObject(given.properties)) {
      throw new ValidationError("properties", `must be a plain object, got ${describe(given.properties)}`);
    }
    properties = copyObject(given.properties, "properties", 1);
    const json = JSON.stringify(properties);
    propertiesBytes = json.length;
    // UTF-16 length understates UTF-8 bytes by at most 3x; encode only when it may matter.
    if (json.length * 3 > MAX_EVENT_BYTES) propertiesBytes = new TextEncoder().encode(json).length;
    if (propertiesBytes > MAX_EVENT_BYTES) {
      throw new ValidationError("event", `encoded event is over the limit of ${MAX_EVENT_BYTES} bytes`);
    }
  }
  const event = {
    eventId:
      given.eventId === undefined || given.eventId === null
        ? uuidv7(fillRandom, nowMs)
        : checkText("event_id", given.eventId, 1, MAX_EVENT_ID_CHARS),
    eventType: type,
    userId: optionalId("user_id", given.userId),
    sessionId: optionalId("session_id", given.sessionId),
    timestampMs: timestampMs(given.timestamp, nowMs),
    properties,
    index,
    bytes: 0,
  };
  event.bytes = 64 + event.eventId.length + type.length + event.userId.length + event.sessionId.length + propertiesBytes;
  return event;
}
