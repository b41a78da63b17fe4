import { Code, ConnectError } from "@connectrpc/connect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/** First reconnect delay cap; it doubles per consecutive failure up to MAX_BACKOFF_MS. */
export const INITIAL_BACKOFF_MS = 100;
export const MAX_BACKOFF_MS = 30_000;

const RETRY_INFO = "google.rpc.RetryInfo";

// A request the server refuses for these reasons fails the same way when repeated.
const PERMANENT = new Set<Code>([Code.InvalidArgument, Code.Unauthenticated, Code.PermissionDenied]);

/** True when sending the same request again may succeed (network errors included). */
export function isRetryable(error: unknown): boolean {
  return !PERMANENT.has(ConnectError.from(error).code);
}

/** True when the server refused for lack of room: send fewer batches at once. */
export function isOverload(error: unknown): boolean {
  return ConnectError.from(error).code === Code.ResourceExhausted;
}

/** Decodes google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2; } to ms. */
function durationMs(bytes: Uint8Array): number {
  const reader = new BinaryReader(bytes);
  let seconds = 0;
  let nanos = 0;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.Varint) seconds = Number(reader.int64());
    else if (field === 2 && wireType === WireType.Varint) nanos = reader.int32();
    else reader.skip(wireType);
  }
  return seconds * 1000 + nanos / 1e6;
}

/**
 * The delay a `google.rpc.RetryInfo` detail asks for, read from the status details
 * (`grpc-status-details-bin`); undefined when there is none.
 */
export function retryInfoDelayMs(error: unknown): number | undefined {
  const connectError = ConnectError.from(error);
  for (const detail of connectError.details) {
    if (!("type" in detail) || detail.type !== RETRY_INFO) continue;
    const reader = new BinaryReader(detail.value);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 1 && wireType === WireType.LengthDelimited) return durationMs(reader.bytes());
      reader.skip(wireType);
    }
  }
  return undefined;
}

/**
 * The wait before attempt `failures + 1`: exponential backoff with full jitter (a random
 * delay up to 100 ms × 2^(failures-1), at most 30 s), never sooner than the RetryInfo
 * delay the server sent.
 */
export function retryDelayMs(error: unknown, failures: number): number {
  const cap = Math.min(MAX_BACKOFF_MS, INITIAL_BACKOFF_MS * 2 ** Math.max(0, failures - 1));
  return Math.max(Math.random() * cap, retryInfoDelayMs(error) ?? 0);
}

/** A timer that does not keep a Node process alive; plain setTimeout elsewhere. */
export function unrefTimeout(callback: () => void, ms: number): ReturnType<typeof setTimeout> {
  const timer = setTimeout(callback, ms);
  (timer as { unref?: () => void }).unref?.();
  return timer;
}

/** Resolves after `ms` (unref'd), or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = unrefTimeout(done, ms);
    signal?.addEventListener("abort", done);
  });
}
