// Funnels: /v1/analytics/funnel as a bar chart of the users reaching each step, with each
// step's share of the first.
import { call } from "../api";
import { BarChart } from "../chart";
import { type Query, update } from "../state";
import { windowOf } from "../time";
import { ErrorNote, Panel, Select, WindowPicker, number, useDraft, useLoad } from "../ui";

interface FunnelAnswer {
  steps: { event_type: string; users: string }[];
}

const WITHIN: [string, string][] = [
  ["3600s", "1 hour"],
  ["86400s", "1 day"],
  ["604800s", "7 days"],
  ["2592000s", "30 days"],
];

export function Funnels({ query }: { query: Query }) {
  const window = windowOf(query, "30d");
  const steps = query.getAll("step").filter(Boolean);
  const params = { steps, conversion_window: query.get("within") ?? "86400s", start_time: window.start, end_time: window.end, property_filters: query.getAll("prop") };
  const { data, error, loading } = useLoad(steps.length >= 2 ? JSON.stringify(params) : "", (signal) => call<FunnelAnswer>("/v1/analytics/funnel", params, { signal }));
  const first = Number(data?.steps[0]?.users ?? 0);
  const [draft, setDraft] = useDraft(steps.join(", "));
  return (
    <>
      <form
        class="filters"
        onSubmit={(event) => {
          event.preventDefault();
          const form = new FormData(event.currentTarget);
          update({ step: String(form.get("steps") ?? "").split(/[,>]/).map((step) => step.trim()).filter(Boolean) });
        }}
      >
        <label class="field wide">
          <span>Steps, in order</span>
          <input
            name="steps"
            data-testid="funnel-steps"
            list="event-types"
            placeholder="view, signup, buy"
            autocomplete="off"
            value={draft}
            onInput={(event) => setDraft(event.currentTarget.value)}
          />
        </label>
        <Select label="Within" name="within" query={query} fallback="86400s" options={WITHIN} />
        <WindowPicker query={query} window={window} fallback="30d" />
        <div class="actions">
          <button type="submit" data-testid="run">
            Run
          </button>
        </div>
      </form>
      <Panel title="Users reaching each step" busy={loading}>
        <ErrorNote error={error} />
        {steps.length < 2 && <p class="empty">Name two to ten event types, in order.</p>}
        {data && (
          <>
            <BarChart
              title="Funnel"
              bars={data.steps.map((step) => ({ label: step.event_type, value: Number(step.users), note: first ? `${((Number(step.users) / first) * 100).toFixed(1)} %` : "" }))}
            />
            <table data-testid="funnel-table" class="sr-table">
              <thead>
                <tr>
                  <th scope="col">Step</th>
                  <th scope="col">Event type</th>
                  <th scope="col" class="num">
                    Users
                  </th>
                </tr>
              </thead>
              <tbody>
                {data.steps.map((step, index) => (
                  <tr>
                    <td>{index + 1}</td>
                    <td>{step.event_type}</td>
                    <td class="num" data-users={step.users}>
                      {number.format(Number(step.users))}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </Panel>
    </>
  );
}
