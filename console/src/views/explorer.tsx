// Explorer: the event listing with filters and keyset paging (the page tokens walked so
// far are kept in `t`, so a shared URL opens the same page), a user's timeline
// (/v1/users/{user_id}/events) and one event's detail with its properties as JSON.
import { type EventRecord, call } from "../api";
import { EventTable } from "../events";
import { type Query, follow, href, update } from "../state";
import { windowOf } from "../time";
import { ErrorNote, Field, Panel, Select, WindowPicker, useLoad } from "../ui";

interface Listing {
  events: EventRecord[];
  next_page_token: string;
}

export function Explorer({ query }: { query: Query }) {
  const window = windowOf(query, "30d");
  const user = query.get("user") ?? "";
  const tokens = query.getAll("t");
  const params = {
    event_type: query.get("type") ?? "",
    property_filters: query.getAll("prop"),
    start_time: window.start,
    end_time: window.end,
    page_size: query.get("size") ?? "50",
    page_token: tokens[tokens.length - 1] ?? "",
  };
  const path = user ? `/v1/users/${encodeURIComponent(user)}/events` : "/v1/events";
  const { data, error, loading } = useLoad(JSON.stringify([path, params]), (signal) => call<Listing>(path, params, { signal }));
  const selected = query.get("event") ?? "";
  const detail = data?.events.find((event) => event.event_id === selected);
  return (
    <>
      <form class="filters" onSubmit={(event) => event.preventDefault()}>
        <Field label="Event type" name="type" query={query} list="event-types" />
        <Field label="User" name="user" query={query} />
        <Field label="Properties" name="prop" query={query} placeholder="plan=pro, seats=5" />
        <Select label="Page size" name="size" query={query} fallback="50" options={["20", "50", "100", "500"].map((size) => [size, size])} />
        <WindowPicker query={query} window={window} fallback="30d" />
      </form>
      <div class={detail || selected ? "split" : ""}>
        <Panel title={user ? `Timeline of ${user}` : "Events"} busy={loading}>
          <ErrorNote error={error} />
          <div class="scroll">
            <EventTable testid="explorer-events" events={data?.events ?? []} linked selected={selected} />
            {data && data.events.length === 0 && <p class="empty">No events match in this window.</p>}
          </div>
          <nav class="pager" aria-label="Pages">
            <button type="button" disabled={tokens.length === 0} onClick={() => update({ t: tokens.slice(0, -1), event: undefined })}>
              ← Newer
            </button>
            <span data-testid="page-number">Page {tokens.length + 1}</span>
            <button type="button" data-testid="next-page" disabled={!data?.next_page_token} onClick={() => update({ t: [...tokens, data?.next_page_token ?? ""], event: undefined })}>
              Older →
            </button>
          </nav>
        </Panel>
        {selected && (
          <Panel title="Event">
            <a class="close" href={href({ event: undefined })} onClick={follow} aria-label="Close the event detail">
              ×
            </a>
            {detail ? <EventDetail event={detail} /> : !loading && <p class="empty">This event is not on this page.</p>}
          </Panel>
        )}
      </div>
    </>
  );
}

function EventDetail({ event }: { event: EventRecord }) {
  const rows: [string, string][] = [
    ["event_id", event.event_id],
    ["event_type", event.event_type],
    ["user_id", event.user_id],
    ["session_id", event.session_id],
    ["timestamp", event.timestamp],
    ["received_at", event.received_at],
  ];
  return (
    <div data-testid="event-detail">
      <dl class="detail">
        {rows.map(([name, value]) => (
          <>
            <dt>{name}</dt>
            <dd class="mono">{value || "—"}</dd>
          </>
        ))}
      </dl>
      <h3>properties</h3>
      <pre class="json" data-testid="event-properties">
        {JSON.stringify(event.properties ?? {}, null, 2)}
      </pre>
    </div>
  );
}
