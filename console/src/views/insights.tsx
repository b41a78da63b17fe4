// Insights: a count and a series by interval (/v1/stats/count and /v1/stats/timeseries)
// of events or unique users, optionally broken down by a property, drawn with a legend
// and listed as a table with the same numbers.
import { call } from "../api";
import { SeriesChart, type Series } from "../chart";
import type { Query } from "../state";
import { windowOf } from "../time";
import { ErrorNote, Field, Panel, Select, WindowPicker, number, useLoad } from "../ui";

interface Group {
  kind: string;
  value: string;
  count: string;
}

interface Timeseries {
  buckets: { start_time: string; count: string; groups: Group[] }[];
  exact: boolean;
}

interface Count {
  count: string;
  exact: boolean;
  groups: Group[];
}

const INTERVALS: Record<string, string> = { minute: "INTERVAL_MINUTE", hour: "INTERVAL_HOUR", day: "INTERVAL_DAY" };

export function groupLabel(group: Group): string {
  if (group.kind === "PROPERTY_GROUP_KIND_MISSING") return "(not set)";
  if (group.kind === "PROPERTY_GROUP_KIND_OTHER") return "(other)";
  return group.value;
}

function bucketLabel(iso: string, interval: string): string {
  return interval === "day" ? iso.slice(0, 10) : iso.slice(interval === "hour" ? 5 : 11, 16).replace("T", " ");
}

export function Insights({ query }: { query: Query }) {
  const window = windowOf(query);
  const interval = query.get("interval") ?? (query.get("range") === "24h" ? "hour" : "day");
  const measure = query.get("measure") === "users" ? "MEASURE_UNIQUE_USERS" : "MEASURE_EVENTS";
  const by = query.get("by") ?? "";
  const params = { event_type: query.get("type") ?? "", start_time: window.start, end_time: window.end, measure, group_by_property: by };
  const { data, error, loading } = useLoad(JSON.stringify([params, interval]), (signal) =>
    Promise.all([
      call<Count>("/v1/stats/count", params, { signal }),
      call<Timeseries>("/v1/stats/timeseries", { ...params, interval: INTERVALS[interval] ?? "INTERVAL_DAY" }, { signal }),
    ]),
  );
  const [count, series] = data ?? [undefined, undefined];
  const labels = series?.buckets.map((bucket) => bucketLabel(bucket.start_time, interval)) ?? [];
  const lines: Series[] = [];
  if (series && by) {
    const names = count?.groups.map(groupLabel) ?? [];
    for (const bucket of series.buckets) for (const group of bucket.groups) if (!names.includes(groupLabel(group))) names.push(groupLabel(group));
    for (const name of names) {
      lines.push({ label: name, values: series.buckets.map((bucket) => Number(bucket.groups.find((group) => groupLabel(group) === name)?.count ?? 0)) });
    }
  } else if (series) {
    lines.push({ label: `${query.get("type") || "all events"} (${measure === "MEASURE_EVENTS" ? "events" : "unique users"})`, values: series.buckets.map((bucket) => Number(bucket.count)) });
  }
  const unit = measure === "MEASURE_EVENTS" ? "events" : "unique users";
  return (
    <>
      <form class="filters" onSubmit={(event) => event.preventDefault()}>
        <Field label="Event type" name="type" query={query} list="event-types" placeholder="all events" />
        <Select label="Measure" name="measure" query={query} fallback="events" options={[["events", "Events"], ["users", "Unique users"]]} />
        <Select label="Interval" name="interval" query={query} fallback={interval} options={[["minute", "Minute"], ["hour", "Hour"], ["day", "Day"]]} />
        <Field label="Breakdown by property" name="by" query={query} placeholder="plan" />
        <WindowPicker query={query} window={window} />
      </form>
      <Panel busy={loading}>
        <ErrorNote error={error} />
        <p class="total">
          <strong data-testid="total">{count ? number.format(Number(count.count)) : "–"}</strong> {unit}
          {count && !count.exact && <small title="estimated from HyperLogLog sketches, within 2 %"> (estimate)</small>}
        </p>
        <SeriesChart labels={labels} series={lines} title={`${unit} per ${interval}`} />
      </Panel>
      <Panel title="Numbers" busy={loading}>
        <div class="scroll">
          <table data-testid="series-table">
            <thead>
              <tr>
                <th scope="col">{interval} (UTC)</th>
                {lines.map((line) => (
                  <th scope="col" class="num">
                    {line.label}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {series?.buckets.map((bucket, row) => (
                <tr data-start={bucket.start_time}>
                  <td class="mono">{bucket.start_time.slice(0, 16).replace("T", " ")}</td>
                  {lines.map((line) => (
                    <td class="num">{number.format(line.values[row])}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Panel>
    </>
  );
}
