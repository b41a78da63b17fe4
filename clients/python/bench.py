"""Benchmark of the Python producer (not a test: it asserts nothing).

Measures, against a running server (the same one throughout):
1. the cost of `track()` in the calling thread: p50/p99/p99.9 over `--calls` calls, while
   the sender thread is streaming them (the GIL is shared, so this is the realistic case);
2. end-to-end acknowledged events/s from one process: `--events` events tracked as fast
   as possible, timed until `shutdown()` has every acknowledgement, beside a raw
   IngestBidi stream of prebuilt batches from the same process (the SDK's overhead);
3. in the same run, when the server binary has it, the Rust producer's rate from
   `eventline bench producer --target URL --api-key KEY --json`, and the ratio
   python/rust (target: >= 0.5).

    python clients/python/bench.py --target 127.0.0.1:50051 --api-key elk_… \
        [--eventline-bin target/release/eventline] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import eventline

EVENT_TYPES = ("page_view", "signup", "click", "purchase", "search")


def percentile(sorted_values: List[int], fraction: float) -> float:
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index] / 1000.0


def track_cost(target: str, api_key: str, calls: int, sending: bool = True) -> Dict[str, float]:
    """Per-call cost of track() in microseconds, with the sender streaming the events
    (`sending`), or holding them all until the end (the calling thread alone)."""
    if sending:
        client = eventline.Client(target, api_key=api_key, max_queue_size=calls)
    else:
        client = eventline.Client(
            target, api_key=api_key, max_queue_size=calls, max_batch=2000, flush_interval=3600
        )
    for number in range(2_000):  # warm up: imports, caches, the stream
        client.track("warmup", user_id="u", properties={"n": number})
    client.flush(timeout=60)
    timings = [0] * calls
    clock = time.perf_counter_ns
    track = client.track
    for number in range(calls):
        properties = {"plan": "pro", "n": number, "path": "/pricing"}
        started = clock()
        track(EVENT_TYPES[number % 5], user_id=f"user-{number % 1000}", properties=properties)
        timings[number] = clock() - started
    counts = client.shutdown(timeout=300)
    timings.sort()
    prefix = "track" if sending else "track_idle_sender"
    return {
        f"{prefix}_p50_us": percentile(timings, 0.50),
        f"{prefix}_p99_us": percentile(timings, 0.99),
        f"{prefix}_p999_us": percentile(timings, 0.999),
        f"{prefix}_mean_us": sum(timings) / len(timings) / 1000.0,
        f"{prefix}_calls": calls,
        f"{prefix}_failed_or_dropped": counts.failed + counts.dropped,
    }


def raw_bidi(target: str, api_key: str, events: int) -> Dict[str, float]:
    """The baseline without the SDK: prebuilt batches of 500 on one IngestBidi stream,
    4 in flight, from this process. Shows what the server and gRPC Python allow."""
    import threading

    import grpc

    from eventline.v1 import event_pb2, ingest_pb2, ingest_pb2_grpc

    batches = []
    for start in range(0, events, 500):
        batch = ingest_pb2.IngestBidiRequest(sequence=len(batches) + 1)
        for number in range(start, min(events, start + 500)):
            event = batch.events.add(
                event_id=eventline.uuid7(),
                event_type=EVENT_TYPES[number % 5],
                user_id=f"user-{number % 1000}",
            )
            event.timestamp.GetCurrentTime()
            event.properties.update({"plan": "pro", "n": number, "path": "/pricing"})
        batches.append(batch)
    slots = threading.Semaphore(4)

    def requests():
        for batch in batches:
            slots.acquire()
            yield batch

    target = target.split("://", 1)[-1]
    with grpc.insecure_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        started = time.perf_counter()
        acknowledged = 0
        for ack in stub.IngestBidi(requests(), metadata=(("x-api-key", api_key),)):
            acknowledged += sum(
                1 for result in ack.results if result.status != event_pb2.INGEST_STATUS_REJECTED
            )
            slots.release()
        seconds = time.perf_counter() - started
    return {"raw_bidi_events_per_second": acknowledged / seconds, "raw_bidi_events": acknowledged}


def end_to_end(target: str, api_key: str, events: int) -> Dict[str, float]:
    """Acknowledged events per second from one process."""
    client = eventline.Client(target, api_key=api_key, max_queue_size=events)
    started = time.perf_counter()
    for number in range(events):
        client.track(
            EVENT_TYPES[number % 5],
            user_id=f"user-{number % 1000}",
            properties={"plan": "pro", "n": number, "path": "/pricing"},
        )
    tracked = time.perf_counter()
    counts = client.shutdown(timeout=600)
    finished = time.perf_counter()
    acknowledged = counts.accepted + counts.duplicates
    return {
        "python_events": events,
        "python_acknowledged": acknowledged,
        "python_failed_or_dropped": counts.failed + counts.dropped + counts.rejected,
        "python_track_seconds": tracked - started,
        "python_seconds": finished - started,
        "python_events_per_second": acknowledged / (finished - started),
    }


def rust_producer(binary: Optional[str], target: str, api_key: str) -> Dict[str, Any]:
    """The Rust producer's figures from `eventline bench producer`, or why there are none."""
    if not binary:
        return {"rust_skipped": "no eventline binary (--eventline-bin or $EVENTLINE_BIN)"}
    probe = subprocess.run(
        [binary, "bench", "producer", "--help"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        return {
            "rust_skipped": f"{binary} has no 'bench producer' subcommand yet "
            f"(exit {probe.returncode}): no Rust baseline in this run"
        }
    url = target if "://" in target else f"http://{target}"
    run = subprocess.run(
        [binary, "bench", "producer", "--target", url, "--api-key", api_key, "--json"],
        capture_output=True, text=True, timeout=1800,
    )
    if run.returncode != 0:
        return {"rust_skipped": f"'bench producer' failed (exit {run.returncode}): {run.stderr[-2000:]}"}
    lines = [line for line in run.stdout.splitlines() if line.strip().startswith("{")]
    report = json.loads(lines[-1])
    return {f"rust_{key}": value for key, value in report.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--api-key", default=os.environ.get("EVENTLINE_API_KEY"))
    parser.add_argument("--calls", type=int, default=100_000, help="track() calls timed")
    parser.add_argument("--events", type=int, default=200_000, help="events for the end-to-end rate")
    parser.add_argument("--eventline-bin", default=os.environ.get("EVENTLINE_BIN"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not args.api_key:
        parser.error("--api-key (or $EVENTLINE_API_KEY) is required")

    results: Dict[str, Any] = {}
    results.update(track_cost(args.target, args.api_key, args.calls, sending=False))
    results.update(track_cost(args.target, args.api_key, args.calls))
    results.update(raw_bidi(args.target, args.api_key, args.events))
    results.update(end_to_end(args.target, args.api_key, args.events))
    results["python_over_raw_bidi"] = (
        results["python_events_per_second"] / results["raw_bidi_events_per_second"]
    )
    results.update(rust_producer(args.eventline_bin, args.target, args.api_key))
    rust_rate = results.get("rust_producer_events_per_second")
    if rust_rate:
        results["python_over_rust"] = results["python_events_per_second"] / rust_rate
    if args.json:
        print(json.dumps(results))
        return 0
    for prefix, what in (("track_idle_sender", "sender idle"), ("track", "sender streaming")):
        print(f"track() in the calling thread, {what}, {results[prefix + '_calls']} calls: "
              f"p50 {results[prefix + '_p50_us']:.1f} us, p99 {results[prefix + '_p99_us']:.1f} us "
              f"(target <= 20), p99.9 {results[prefix + '_p999_us']:.1f} us, "
              f"mean {results[prefix + '_mean_us']:.1f} us")
    print(f"raw IngestBidi from Python (prebuilt batches, no SDK): "
          f"{results['raw_bidi_events_per_second']:,.0f} events/s")
    print(f"end to end, one process: {results['python_acknowledged']} acknowledged in "
          f"{results['python_seconds']:.2f} s = {results['python_events_per_second']:,.0f} events/s "
          f"(track loop {results['python_track_seconds']:.2f} s); "
          f"SDK/raw = {results['python_over_raw_bidi']:.2f}")
    if rust_rate:
        print(f"Rust producer (same server, same run): {rust_rate:,.0f} events/s; "
              f"bidi baseline {results.get('rust_bidi_events_per_second', 0):,.0f} events/s")
        print(f"python/rust = {results['python_over_rust']:.2f} (target >= 0.5)")
    else:
        print(f"Rust baseline: {results['rust_skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
