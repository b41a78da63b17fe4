// Retention: /v1/analytics/retention as a cohort table, each cell shaded by its share of
// the cohort.
import { call } from "../api";
import type { Query } from "../state";
import { windowOf } from "../time";
import { ErrorNote, Field, Panel, Select, WindowPicker, number, useLoad } from "../ui";

interface RetentionAnswer {
  cohorts: { start_time: string; users: string; returned: string[] }[];
}

export function Retention({ query }: { query: Query }) {
  const window = windowOf(query);
  const start = query.get("start") ?? "";
  const back = query.get("return") ?? "";
  const interval = query.get("interval") === "week" ? "RETENTION_INTERVAL_WEEK" : "RETENTION_INTERVAL_DAY";
  const params = { start_event_type: start, return_event_type: back, interval, start_time: window.start, end_time: window.end };
  const { data, error, loading } = useLoad(start && back ? JSON.stringify(params) : "", (signal) => call<RetentionAnswer>("/v1/analytics/retention", params, { signal }));
  const width = Math.max(0, ...(data?.cohorts.map((cohort) => cohort.returned.length) ?? []));
  const prefix = interval === "RETENTION_INTERVAL_WEEK" ? "week" : "day";
  return (
    <>
      <form class="filters" onSubmit={(event) => event.preventDefault()}>
        <Field label="Start event" name="start" query={query} list="event-types" placeholder="signup" />
        <Field label="Return event" name="return" query={query} list="event-types" placeholder="login" />
        <Select label="Interval" name="interval" query={query} fallback="day" options={[["day", "Day"], ["week", "Week"]]} />
        <WindowPicker query={query} window={window} />
      </form>
      <Panel title="Cohorts" busy={loading}>
        <ErrorNote error={error} />
        {!(start && back) && <p class="empty">Pick a start event and a return event.</p>}
        {data && (
          <div class="scroll">
            <table class="cohorts" data-testid="retention-table">
              <thead>
                <tr>
                  <th scope="col">Cohort</th>
                  <th scope="col" class="num">
                    Users
                  </th>
                  {Array.from({ length: width }, (_, index) => (
                    <th scope="col" class="num">{`${prefix} ${index}`}</th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {data.cohorts.map((cohort) => {
                  const users = Number(cohort.users);
                  return (
                    <tr data-cohort={cohort.start_time}>
                      <th scope="row" class="mono">
                        {cohort.start_time.slice(0, 10)}
                      </th>
                      <td class="num" data-value={cohort.users}>
                        {number.format(users)}
                      </td>
                      {cohort.returned.map((returned) => {
                        const share = users ? Number(returned) / users : 0;
                        return (
                          <td class="num cell" data-value={returned} style={{ "--share": share.toFixed(3) }} title={users ? `${(share * 100).toFixed(1)} % of ${users}` : ""}>
                            {number.format(Number(returned))}
                          </td>
                        );
                      })}
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        )}
      </Panel>
    </>
  );
}
