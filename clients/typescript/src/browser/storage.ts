import type { QueuedEvent } from "../core/event.js";

/** What one stored event looks like in localStorage (also the REST body's event form). */
interface StoredEvent {
  event_id: string;
  event_type: string;
  user_id?: string;
  session_id?: string;
  timestamp: string;
  properties?: QueuedEvent["properties"];
}

/** The REST/JSON form of an event (proto3 JSON field names). */
export function restEvent(event: QueuedEvent): StoredEvent {
  const json: StoredEvent = {
    event_id: event.eventId,
    event_type: event.eventType,
    timestamp: new Date(event.timestampMs).toISOString(),
  };
  if (event.userId !== "") json.user_id = event.userId;
  if (event.sessionId !== "") json.session_id = event.sessionId;
  if (event.properties !== undefined) json.properties = event.properties;
  return json;
}

function fromStored(stored: StoredEvent): Omit<QueuedEvent, "index"> | undefined {
  const timestampMs = Date.parse(stored.timestamp);
  if (typeof stored.event_id !== "string" || typeof stored.event_type !== "string" || Number.isNaN(timestampMs)) {
    return undefined;
  }
  return {
    eventId: stored.event_id,
    eventType: stored.event_type,
    userId: stored.user_id ?? "",
    sessionId: stored.session_id ?? "",
    timestampMs,
    properties: stored.properties,
    bytes: 64 + (stored.properties === undefined ? 0 : JSON.stringify(stored.properties).length),
  };
}

function storage(): Storage | undefined {
  try {
    return globalThis.localStorage ?? undefined;
  } catch {
    return undefined; // disabled storage (some privacy modes) throws on access
  }
}

/**
 * Unsent events kept in localStorage under one key, at most `limit` of them, so a page
 * that is closed or reloaded before they were acknowledged sends them on its next load.
 */
export class EventStore {
  constructor(
    private readonly key: string,
    private readonly limit: number,
  ) {}

  /** Takes the events a previous page left; they stay stored until the next save. */
  load(): Omit<QueuedEvent, "index">[] {
    try {
      const text = storage()?.getItem(this.key);
      if (!text) return [];
      const parsed: unknown = JSON.parse(text);
      if (!Array.isArray(parsed)) return [];
      return parsed.map(fromStored).filter((event) => event !== undefined).slice(0, this.limit);
    } catch {
      return [];
    }
  }

  /** Replaces what is stored with the oldest `limit` of `events`; returns how many did not fit. */
  save(events: QueuedEvent[]): number {
    const kept = events.slice(0, this.limit);
    try {
      const local = storage();
      if (kept.length === 0) local?.removeItem(this.key);
      else local?.setItem(this.key, JSON.stringify(kept.map(restEvent)));
    } catch {
      return events.length; // quota exceeded or storage disabled: nothing was kept
    }
    return events.length - kept.length;
  }
}
