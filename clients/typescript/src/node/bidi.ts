import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { IngestBidiRequestSchema, type IngestBidiRequest, type IngestService } from "../gen/eventline/v1/ingest_pb.js";
import type { Batch, ProducerCore } from "../core/producer.js";
import { toProtoEvent } from "./proto.js";
import { isOverload, isRetryable, retryDelayMs, sleep } from "../core/retry.js";
import { Outbox } from "./outbox.js";

interface SessionEnd {
  error: unknown;
  acknowledged: boolean;
}

/**
 * Sends the producer's batches over IngestBidi. A stream is opened when there is
 * something to send and closed once everything is acknowledged (an open stream would
 * keep a Node process alive). After a broken stream it waits (RetryInfo, else backoff
 * with full jitter) and resends every unacknowledged batch with its sequence and ids.
 */
export function bidiSender(client: Client<typeof IngestService>): (core: ProducerCore) => Promise<void> {
  return async (core) => {
    let failures = 0;
    for (;;) {
      if (core.unacknowledged().length === 0 && (await core.nextBatch(undefined, false)) === undefined) return;
      const end = await session(core, client);
      if (core.stopSignal.aborted) return;
      if (end.error === undefined) {
        failures = 0;
        continue;
      }
      failures = end.acknowledged ? 1 : failures + 1;
      if (!isRetryable(end.error)) {
        for (const batch of core.unacknowledged()) core.giveUp(batch, end.error);
        continue;
      }
      core.giveUpExpired(end.error);
      if (isOverload(end.error)) core.overloaded();
      const delay = retryDelayMs(end.error, failures);
      core.retrying(end.error, delay);
      await sleep(delay, core.stopSignal);
    }
  };
}

function request(batch: Batch): IngestBidiRequest {
  batch.firstSentMs ??= Date.now();
  return create(IngestBidiRequestSchema, {
    sequence: BigInt(batch.sequence),
    events: batch.events.map(toProtoEvent),
    sentAt: timestampNow(),
  });
}

async function session(core: ProducerCore, client: Client<typeof IngestService>): Promise<SessionEnd> {
  const controller = new AbortController();
  const stop = () => controller.abort();
  core.stopSignal.addEventListener("abort", stop);
  const outbox = new Outbox<IngestBidiRequest>();
  // Unacknowledged batches go first (same sequence and ids), as the window allows.
  const sent = new Set<number>();
  const pump = (async () => {
    for (;;) {
      const batch = await core.nextBatch(controller.signal, true, sent);
      if (batch === undefined) break;
      outbox.push(request(batch));
    }
    outbox.close();
  })();
  let acknowledged = false;
  try {
    for await (const ack of client.ingestBidi(outbox, { signal: controller.signal })) {
      acknowledged = true;
      core.acknowledge(Number(ack.sequence), ack.results);
    }
    const error =
      core.unacknowledged().length > 0
        ? new ConnectError("stream ended before every batch was acknowledged", Code.Unavailable)
        : undefined;
    return { error, acknowledged };
  } catch (error) {
    return { error, acknowledged };
  } finally {
    core.stopSignal.removeEventListener("abort", stop);
    controller.abort();
    core.wakeUp();
    outbox.close();
    await pump;
  }
}
