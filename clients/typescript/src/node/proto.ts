import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, type Event } from "../gen/eventline/v1/event_pb.js";
import type { QueuedEvent } from "../core/event.js";

/** The wire form of a queued event. */
export function toProtoEvent(event: QueuedEvent): Event {
  return create(EventSchema, {
    eventId: event.eventId,
    eventType: event.eventType,
    userId: event.userId,
    sessionId: event.sessionId,
    timestamp: timestampFromMs(event.timestampMs),
    properties: event.properties,
  });
}
