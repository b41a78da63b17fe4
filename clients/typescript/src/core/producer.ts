import { prepareEvent, type QueuedEvent, type TrackOptions } from "./event.js";
import { unrefTimeout } from "./retry.js";
import type { RandomFill } from "./uuid.js";

/** Producer settings; every one has the contract's default (clients/README.md). */
export interface ProducerOptions {
  /** Events waiting to be batched, at most; default 10,000. */
  maxQueueSize?: number;
  /** Events per batch, at most; default 500 (the server takes up to 2,000). */
  maxBatch?: number;
  /** A partial batch goes out after this long; default 1,000 ms. */
  flushIntervalMs?: number;
  /** Unacknowledged batches, at most; default 4. */
  maxInFlight?: number;
  /** How long one batch is retried before it is counted as failed; default 10 minutes. */
  maxRetryDurationMs?: number;
  /** Which event a full queue drops: the new one (default) or the oldest queued. */
  queueFullPolicy?: "drop_newest" | "drop_oldest";
  /** Called for every event the server rejected; defaults to console.warn. */
  onRejected?: (rejection: Rejection) => void;
  /** Called on every failed send with the wait before the next attempt. */
  onError?: (error: unknown, retryInMs: number) => void;
}

/** An event the server refused; it is never resent. */
export interface Rejection {
  eventId: string;
  eventType: string;
  /** The server's reason, naming the field (`event_type: must be 1 to 128 characters…`). */
  error: string;
}

/** Where every successful `track()` ended up; the five always add up to the calls. */
export interface ProducerCounts {
  accepted: number;
  duplicates: number;
  rejected: number;
  /** Dropped because the queue was full. */
  dropped: number;
  /** Given up after maxRetryDurationMs, refused for good, or cut off by a shutdown timeout. */
  failed: number;
}

/** The counts so far plus what is still on its way. */
export interface ProducerStats extends ProducerCounts {
  /** Successful `track()` calls. */
  tracked: number;
  /** Events restored from an earlier page (browser); they are counted like tracked ones. */
  restored: number;
  queued: number;
  inFlight: number;
  /** Failed sends that were retried. */
  retries: number;
  /** Batches allowed in flight now: maxInFlight, less after RESOURCE_EXHAUSTED. */
  inFlightWindow: number;
}

/** One numbered batch; keeps its number and event ids when it is resent. */
export interface Batch {
  readonly sequence: number;
  readonly events: QueuedEvent[];
  /** When it was first sent; undefined until then. */
  firstSentMs: number | undefined;
}

/** One event's outcome, as the server reports it (eventline.v1.EventResult). */
export interface EventOutcome {
  /** IngestStatus: 1 accepted, 2 duplicate, 3 rejected. */
  status: number;
  error: string;
}

/** A batch message stays under this many (estimated) bytes; the server takes 20 MiB. */
const MAX_BATCH_BYTES = 16 * 1024 * 1024;

const STATUS_ACCEPTED = 1;
const STATUS_DUPLICATE = 2;
const STATUS_REJECTED = 3;

function positiveInteger(name: string, value: number | undefined, fallback: number, max = Infinity): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new RangeError(`${name}: must be an integer from 1 to ${max}, got ${value}`);
  }
  return value;
}

/**
 * The transport-independent half of the producer: the bounded queue, batching, the
 * unacknowledged batches, the counts, flush and shutdown. A sender (bidi stream in Node,
 * unary gRPC-Web calls in the browser) takes batches with `nextBatch` and reports back
 * with `acknowledge`, `retrying` and `giveUp`.
 */
export class ProducerCore {
  readonly maxQueueSize: number;
  readonly maxBatch: number;
  readonly flushIntervalMs: number;
  readonly maxInFlight: number;
  readonly maxRetryDurationMs: number;
  private readonly dropOldest: boolean;
  private readonly onRejected: (rejection: Rejection) => void;
  private readonly onError: ((error: unknown, retryInMs: number) => void) | undefined;
  private readonly fillRandom: RandomFill;

  private queue: QueuedEvent[] = [];
  private head = 0;
  private readonly inFlight = new Map<number, Batch>();
  // Batches allowed in flight: maxInFlight, halved on RESOURCE_EXHAUSTED and grown by one
  // per window of acknowledgements (clients/README.md, "Retries").
  private window: number;
  private acksTowardGrowth = 0;
  private nextSequence = 1;
  private nextIndex = 0;
  private flushTarget = 0;
  private due = false;
  private intervalTimer: ReturnType<typeof setTimeout> | undefined;
  private closing = false;
  private readonly stopController = new AbortController();
  private wake: () => void = () => {};
  private changed: Promise<void> = this.renewChanged();
  private waiters: { target: number; resolve: () => void }[] = [];
  private keepAlive: ReturnType<typeof setInterval> | undefined;
  private senderStarted = false;
  private senderDone: Promise<void> = Promise.resolve();
  private readonly counts: ProducerCounts = { accepted: 0, duplicates: 0, rejected: 0, dropped: 0, failed: 0 };
  private tracked = 0;
  private restored = 0;
  private retries = 0;

  constructor(
    options: ProducerOptions,
    fillRandom: RandomFill,
    private readonly sender: (core: ProducerCore) => Promise<void>,
  ) {
    this.maxQueueSize = positiveInteger("maxQueueSize", options.maxQueueSize, 10_000);
    this.maxBatch = positiveInteger("maxBatch", options.maxBatch, 500, 2000);
    this.flushIntervalMs = positiveInteger("flushIntervalMs", options.flushIntervalMs, 1000);
    this.maxInFlight = positiveInteger("maxInFlight", options.maxInFlight, 4);
    this.window = this.maxInFlight;
    this.maxRetryDurationMs = positiveInteger("maxRetryDurationMs", options.maxRetryDurationMs, 600_000);
    const policy = options.queueFullPolicy;
    if (policy !== undefined && policy !== "drop_newest" && policy !== "drop_oldest") {
      throw new RangeError(`queueFullPolicy: must be "drop_newest" or "drop_oldest", got ${String(policy)}`);
    }
    this.dropOldest = policy === "drop_oldest";
    this.onRejected =
      options.onRejected ??
      ((rejection) =>
        console.warn(`eventline: event ${rejection.eventId} (${rejection.eventType}) rejected: ${rejection.error}`));
    this.onError = options.onError;
    this.fillRandom = fillRandom;
  }

  /** Aborts when the producer stops for good (shutdown finished or timed out). */
  get stopSignal(): AbortSignal {
    return this.stopController.signal;
  }

  /**
   * Queues one event and returns its id at once; never waits for the network. Throws a
   * ValidationError naming the field for an event the server would reject.
   */
  track(eventType: string, options?: TrackOptions): string {
    if (this.closing) throw new Error("eventline: track() after shutdown()");
    const event = prepareEvent(eventType, options, this.fillRandom, this.nextIndex++);
    this.tracked++;
    this.enqueue(event);
    return event.eventId;
  }

  /**
   * Queues an event tracked by an earlier run (a browser restoring a previous page's
   * unsent events); it keeps its id, so a copy that did arrive is a duplicate.
   */
  restore(event: Omit<QueuedEvent, "index">): void {
    if (this.closing) return;
    this.restored++;
    this.enqueue({ ...event, index: this.nextIndex++ });
  }

  private enqueue(event: QueuedEvent): void {
    if (this.queue.length - this.head >= this.maxQueueSize) {
      this.counts.dropped++;
      if (!this.dropOldest) return this.settled();
      this.head++;
      this.settled();
    }
    this.queue.push(event);
    this.startSender();
    const queued = this.queue.length - this.head;
    if (queued >= this.maxBatch) this.notify();
    else if (queued === 1 && this.intervalTimer === undefined) {
      this.intervalTimer = unrefTimeout(() => {
        this.intervalTimer = undefined;
        this.due = true;
        this.notify();
      }, this.flushIntervalMs);
    }
  }

  /** Everything sent and not yet acknowledged, oldest first. */
  unacknowledged(): Batch[] {
    return [...this.inFlight.values()];
  }

  /** Events queued and not yet in a batch, oldest first. */
  queuedEvents(): QueuedEvent[] {
    return this.queue.slice(this.head);
  }

  /**
   * Waits for the next batch to send. Resolves undefined when the producer stops, when
   * `signal` aborts (call `wakeUp()` after aborting it), or (with `untilIdle`) once
   * nothing is queued or unacknowledged.
   */
  async nextBatch(
    signal: AbortSignal | undefined,
    untilIdle: boolean,
    sent?: Set<number>,
  ): Promise<Batch | undefined> {
    for (;;) {
      if (this.stopSignal.aborted || signal?.aborted) return undefined;
      if (sent !== undefined) {
        const resend = this.nextResend(sent);
        if (resend !== undefined) return resend;
      }
      const queued = this.queue.length - this.head;
      if (queued > 0 && this.inFlight.size < this.window && this.batchDue(queued)) {
        const batch = this.takeBatch();
        sent?.add(batch.sequence);
        return batch;
      }
      if (untilIdle && queued === 0 && this.inFlight.size === 0) return undefined;
      await this.changed;
    }
  }

  /**
   * The oldest unacknowledged batch a stream has not sent yet, when the window has room
   * for it among the batches that stream already sent; it is added to `sent`.
   */
  private nextResend(sent: Set<number>): Batch | undefined {
    let waiting = 0;
    let oldest: Batch | undefined;
    for (const batch of this.inFlight.values()) {
      if (sent.has(batch.sequence)) waiting++;
      else if (oldest === undefined || batch.sequence < oldest.sequence) oldest = batch;
    }
    if (oldest === undefined || waiting >= this.window) return undefined;
    sent.add(oldest.sequence);
    return oldest;
  }

  /** The server refused for lack of room: halve the window (down to 1). */
  overloaded(): void {
    this.window = Math.max(1, Math.floor(this.window / 2));
    this.acksTowardGrowth = 0;
  }


  /** Wakes every `nextBatch` waiter so it rechecks its signal. */
  wakeUp(): void {
    this.notify();
  }

  /** Counts a batch's outcomes; an unknown sequence (already settled) is ignored. */
  acknowledge(sequence: number, outcomes: readonly EventOutcome[]): void {
    const batch = this.inFlight.get(sequence);
    if (batch === undefined) return;
    this.inFlight.delete(sequence);
    if (this.window < this.maxInFlight && ++this.acksTowardGrowth >= this.window) {
      this.window++;
      this.acksTowardGrowth = 0;
    }
    batch.events.forEach((event, position) => {
      const outcome = outcomes[position];
      switch (outcome?.status) {
        case STATUS_ACCEPTED:
          this.counts.accepted++;
          break;
        case STATUS_DUPLICATE:
          this.counts.duplicates++;
          break;
        case STATUS_REJECTED:
          this.counts.rejected++;
          this.report({ eventId: event.eventId, eventType: event.eventType, error: outcome.error });
          break;
        default:
          this.counts.failed++;
      }
    });
    this.settled();
  }

  /** Records a failed send that will be retried after `retryInMs`. */
  retrying(error: unknown, retryInMs: number): void {
    this.retries++;
    this.onError?.(error, retryInMs);
  }

  /** Counts a batch as failed (given up or refused for good); it is not resent. */
  giveUp(batch: Batch, error: unknown): void {
    if (!this.inFlight.delete(batch.sequence)) return;
    this.counts.failed += batch.events.length;
    this.onError?.(error, Infinity);
    this.settled();
  }

  /** Gives up every unacknowledged batch first sent more than maxRetryDurationMs ago. */
  giveUpExpired(error: unknown): void {
    const now = Date.now();
    for (const batch of this.unacknowledged()) {
      if (batch.firstSentMs !== undefined && now - batch.firstSentMs > this.maxRetryDurationMs) {
        this.giveUp(batch, error);
      }
    }
  }

  /**
   * Resolves true once every event tracked before the call is acknowledged (or counted
   * otherwise), false at the timeout.
   */
  flush(timeoutMs?: number): Promise<boolean> {
    const target = this.nextIndex;
    this.flushTarget = Math.max(this.flushTarget, target);
    this.notify();
    if (this.lowestPending() >= target) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = {
        target,
        resolve: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      // A ref'd timer: a caller awaiting flush() keeps a Node process alive until it ends.
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this.waiters = this.waiters.filter((other) => other !== waiter);
              this.updateKeepAlive();
              resolve(false);
            }, timeoutMs);
      this.waiters.push(waiter);
      this.updateKeepAlive();
    });
  }

  /**
   * Flushes for at most `timeoutMs`, stops the sender and returns the final counts;
   * whatever is still unacknowledged then is counted as failed. Later calls return the
   * same counts; `track()` after it throws.
   */
  async shutdown(timeoutMs = 30_000): Promise<ProducerCounts> {
    if (!this.closing) {
      this.closing = true;
      await this.flush(timeoutMs);
      this.stop();
    }
    await this.senderDone;
    return { ...this.counts };
  }

  /** The counts at this moment plus what is queued and unacknowledged. */
  stats(): ProducerStats {
    let inFlight = 0;
    for (const batch of this.inFlight.values()) inFlight += batch.events.length;
    return {
      ...this.counts,
      tracked: this.tracked,
      restored: this.restored,
      queued: this.queue.length - this.head,
      inFlight,
      retries: this.retries,
      inFlightWindow: this.window,
    };
  }

  /** True after shutdown() began. */
  get isClosing(): boolean {
    return this.closing;
  }

  private stop(): void {
    if (this.stopSignal.aborted) return;
    this.counts.failed += this.queue.length - this.head;
    this.queue = [];
    this.head = 0;
    for (const batch of this.inFlight.values()) this.counts.failed += batch.events.length;
    this.inFlight.clear();
    clearTimeout(this.intervalTimer);
    this.stopController.abort();
    this.settled();
  }

  private startSender(): void {
    if (this.senderStarted) return;
    this.senderStarted = true;
    this.senderDone = this.sender(this).catch((error: unknown) => {
      // A sender bug must not lose the accounting: count what is left as failed.
      console.error("eventline: sender stopped", error);
      this.stop();
    });
  }

  private batchDue(queued: number): boolean {
    return (
      queued >= this.maxBatch || this.due || this.closing || this.queue[this.head]!.index < this.flushTarget
    );
  }

  private takeBatch(): Batch {
    const last = Math.min(this.head + this.maxBatch, this.queue.length);
    let end = this.head + 1;
    for (let bytes = this.queue[this.head]!.bytes; end < last; end++) {
      bytes += this.queue[end]!.bytes;
      if (bytes > MAX_BATCH_BYTES) break;
    }
    const events = this.queue.slice(this.head, end);
    this.head = end;
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
      this.due = false;
    } else if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    const batch: Batch = { sequence: this.nextSequence++, events, firstSentMs: undefined };
    this.inFlight.set(batch.sequence, batch);
    return batch;
  }

  private lowestPending(): number {
    let lowest = this.head < this.queue.length ? this.queue[this.head]!.index : Infinity;
    for (const batch of this.inFlight.values()) lowest = Math.min(lowest, batch.events[0]?.index ?? Infinity);
    return lowest;
  }

  private report(rejection: Rejection): void {
    try {
      this.onRejected(rejection);
    } catch (error) {
      console.error("eventline: onRejected threw", error);
    }
  }

  private settled(): void {
    if (this.waiters.length > 0) {
      const lowest = this.lowestPending();
      const ready = this.waiters.filter((waiter) => waiter.target <= lowest);
      if (ready.length > 0) {
        this.waiters = this.waiters.filter((waiter) => waiter.target > lowest);
        this.updateKeepAlive();
        for (const waiter of ready) waiter.resolve();
      }
    }
    this.notify();
  }

  private updateKeepAlive(): void {
    if (this.waiters.length > 0 && this.keepAlive === undefined) {
      this.keepAlive = setInterval(() => {}, 1 << 30);
    } else if (this.waiters.length === 0 && this.keepAlive !== undefined) {
      clearInterval(this.keepAlive);
      this.keepAlive = undefined;
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.changed = this.renewChanged();
    wake();
  }

  private renewChanged(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }
}
