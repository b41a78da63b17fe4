// Live: follows /v1/events:tail from now. Pausing stops the stream and resuming picks up
// after the last event shown (its cursor), so nothing is missed; the list keeps only the
// newest events so the page stays light however long it runs.
import { useEffect, useRef, useState } from "preact/hooks";
import { type EventRecord, tail } from "../api";
import { EventTable } from "../events";
import type { Query } from "../state";
import { ErrorNote, Field, Panel, markFirstData, number } from "../ui";

const KEPT = 200;
const RECONNECT_MS = 3000;

type Status = "connecting" | "live" | "paused" | "failed";

export function Live({ query }: { query: Query }) {
  const filters = { event_type: query.get("type") ?? "", user_id: query.get("user") ?? "", property_filters: query.getAll("prop") };
  const filterKey = JSON.stringify(filters);
  const [events, setEvents] = useState<EventRecord[]>([]);
  const [received, setReceived] = useState(0);
  const [status, setStatus] = useState<Status>("connecting");
  const [error, setError] = useState("");
  const [paused, setPaused] = useState(false);
  const [attempt, setAttempt] = useState(0);
  // The filters of the stream the server answered, so "live" is never claimed for a
  // stream of older filters still shown while the new one connects.
  const [streaming, setStreaming] = useState("");
  const cursor = useRef("");

  // New filters start over from now.
  useEffect(() => {
    cursor.current = "";
    setEvents([]);
    setReceived(0);
  }, [filterKey]);

  useEffect(() => {
    if (paused) {
      setStatus("paused");
      return;
    }
    const controller = new AbortController();
    let retry: ReturnType<typeof setTimeout> | undefined;
    setStatus("connecting");
    setError("");
    tail(
      { ...filters, cursor: cursor.current },
      controller.signal,
      () => {
        setStatus("live");
        setStreaming(filterKey);
        markFirstData();
      },
      (line) => {
        cursor.current = line.cursor;
        setReceived((count) => count + 1);
        setEvents((shown) => [line.event, ...shown].slice(0, KEPT));
      },
    ).catch((failure: Error) => {
      if (controller.signal.aborted) return;
      setStatus("failed");
      setError(failure.message);
      // Reconnects by itself after a while (a server restart, a dropped network), resuming
      // from the last event's cursor like a resume after pause.
      retry = setTimeout(() => setAttempt((count) => count + 1), RECONNECT_MS);
    });
    return () => {
      controller.abort();
      clearTimeout(retry);
    };
  }, [filterKey, paused, attempt]);

  return (
    <>
      <form class="filters" onSubmit={(event) => event.preventDefault()}>
        <Field label="Event type" name="type" query={query} list="event-types" />
        <Field label="User" name="user" query={query} />
        <Field label="Properties" name="prop" query={query} placeholder="plan=pro, seats=5" />
        <div class="actions">
          <button type="button" data-testid="pause" onClick={() => setPaused(!paused)}>
            {paused ? "Resume" : "Pause"}
          </button>
          {status === "failed" && (
            <button type="button" onClick={() => setAttempt(attempt + 1)}>
              Retry now
            </button>
          )}
        </div>
      </form>
      <Panel>
        <p class="status" data-testid="live-status" data-status={status} data-filters={streaming}>
          <span class={`dot ${status}`} aria-hidden="true" />
          {/* Only the connection state is announced, not every event counted. */}
          <span aria-live="polite">
            {status === "live" ? "Live, from now" : status === "paused" ? "Paused" : status === "failed" ? "Disconnected, retrying in a few seconds" : "Connecting…"}
          </span>
          <span>
            · {number.format(received)} received{received > KEPT ? `, newest ${KEPT} shown` : ""}
          </span>
        </p>
        <ErrorNote error={error} />
        <div class="scroll">
          <EventTable testid="live-events" events={events} />
          {events.length === 0 && <p class="empty">Events sent from now on appear here as they are stored.</p>}
        </div>
      </Panel>
    </>
  );
}
