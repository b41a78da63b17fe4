// The protobuf encoding of IngestBatch, written by hand for the browser: generated
// messages would pull the reflection runtime and descriptor.proto into every page
// (about 35 KiB gzipped with connect-web, against a 20 KiB budget). The field numbers
// are those of proto/eventline/v1/{ingest,event}.proto; test/browser checks the
// encoding against the real server.
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { QueuedEvent } from "../core/event.js";
import type { EventOutcome } from "../core/producer.js";

const LEN = WireType.LengthDelimited;

function timestamp(writer: BinaryWriter, field: number, millis: number): void {
  const seconds = Math.floor(millis / 1000);
  writer.tag(field, LEN).fork().tag(1, WireType.Varint).int64(seconds);
  const nanos = Math.round((millis - seconds * 1000) * 1e6);
  if (nanos !== 0) writer.tag(2, WireType.Varint).int32(nanos);
  writer.join();
}

/** Writes field `field` as an embedded message whose content `write` produces. */
function nested(writer: BinaryWriter, field: number, write: () => void): void {
  writer.tag(field, LEN).fork();
  write();
  writer.join();
}

/** google.protobuf.Value */
function value(writer: BinaryWriter, json: JsonValue): void {
  if (json === null) writer.tag(1, WireType.Varint).int32(0);
  else if (typeof json === "number") writer.tag(2, WireType.Bit64).double(json);
  else if (typeof json === "string") writer.tag(3, LEN).string(json);
  else if (typeof json === "boolean") writer.tag(4, WireType.Varint).bool(json);
  else if (Array.isArray(json)) {
    nested(writer, 6, () => {
      for (const item of json) nested(writer, 1, () => value(writer, item));
    });
  } else nested(writer, 5, () => struct(writer, json));
}

/** google.protobuf.Struct: map<string, Value> fields = 1 */
function struct(writer: BinaryWriter, object: JsonObject): void {
  for (const key of Object.keys(object)) {
    nested(writer, 1, () => {
      writer.tag(1, LEN).string(key);
      nested(writer, 2, () => value(writer, object[key]!));
    });
  }
}

function text(writer: BinaryWriter, field: number, content: string): void {
  if (content !== "") writer.tag(field, LEN).string(content);
}

/** eventline.v1.IngestBatchRequest { repeated Event events = 1; Timestamp sent_at = 2; } */
export function encodeIngestBatch(events: readonly QueuedEvent[], sentAtMs: number): Uint8Array {
  const writer = new BinaryWriter();
  for (const event of events) {
    writer.tag(1, LEN).fork();
    text(writer, 1, event.eventId);
    text(writer, 2, event.eventType);
    text(writer, 3, event.userId);
    text(writer, 4, event.sessionId);
    timestamp(writer, 5, event.timestampMs);
    const properties = event.properties;
    if (properties !== undefined) nested(writer, 6, () => struct(writer, properties));
    writer.join();
  }
  timestamp(writer, 2, sentAtMs);
  return writer.finish();
}

/** The per-event outcomes of an eventline.v1.IngestBatchResponse, in request order. */
export function decodeIngestBatchResults(bytes: Uint8Array): EventOutcome[] {
  const outcomes: EventOutcome[] = [];
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field !== 1 || wireType !== LEN) {
      reader.skip(wireType);
      continue;
    }
    // EventResult { string event_id = 1; IngestStatus status = 2; string error = 3; uint64 index = 4; }
    const result = new BinaryReader(reader.bytes());
    const outcome: EventOutcome = { status: 0, error: "" };
    let index = outcomes.length;
    while (result.pos < result.len) {
      const [resultField, resultType] = result.tag();
      if (resultField === 2 && resultType === WireType.Varint) outcome.status = result.int32();
      else if (resultField === 3 && resultType === LEN) outcome.error = result.string();
      else if (resultField === 4 && resultType === WireType.Varint) index = Number(result.uint64());
      else result.skip(resultType);
    }
    outcomes[index] = outcome;
  }
  return outcomes;
}
