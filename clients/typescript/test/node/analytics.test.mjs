// The analytics helpers (count, topEventTypes, series, funnel, retention) against the real
// server: known events spread over six days, every answer compared with the model in
// ../analytics-model.mjs, computed from those events alone.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "../../dist/node/index.js";
import { API_KEY, freePort, freshDatabase, startServer } from "../harness.mjs";
import * as model from "../analytics-model.mjs";

const { DAY, HOUR } = model;
const FUNNEL = ["signup", "view", "purchase"];

/** [what, method, options, expected answer] for events sent from `base` (ms). */
function cases(base) {
  const sent = model.events(base);
  const start = new Date(base);
  const end = new Date(base + 6 * DAY);
  const b = base;
  const e = base + 6 * DAY;
  const funnelEnd = base + 5 * DAY;
  const twoDays = 2 * DAY;
  return [
    ["count of everything", "count", { startTime: start, endTime: end }, model.count(sent, b, e)],
    ["countEvents", "countEvents", { eventType: "view", startTime: start, endTime: end }, model.count(sent, b, e, { eventType: "view" }).count],
    [
      "countEvents of unique users",
      "countEvents",
      { measure: "uniqueUsers", startTime: start, endTime: end },
      model.count(sent, b, e, { measure: "uniqueUsers" }).count,
    ],
    [
      "unique users of one type",
      "count",
      { eventType: "view", measure: "uniqueUsers", startTime: start, endTime: end },
      model.count(sent, b, e, { eventType: "view", measure: "uniqueUsers" }),
    ],
    ["count by plan", "count", { groupByProperty: "plan", startTime: start, endTime: end }, model.count(sent, b, e, { groupLimit: 10 })],
    [
      "count by plan, one value of its own",
      "count",
      { groupByProperty: "plan", groupLimit: 1, startTime: start, endTime: end },
      model.count(sent, b, e, { groupLimit: 1 }),
    ],
    [
      "count of one day by plan",
      "count",
      { eventType: "view", groupByProperty: "plan", startTime: new Date(b + DAY), endTime: new Date(b + 2 * DAY) },
      model.count(sent, b + DAY, b + 2 * DAY, { eventType: "view", groupLimit: 10 }),
    ],
    ["top event types", "topEventTypes", { startTime: start, endTime: end }, model.topEventTypes(sent, b, e, 10)],
    ["top 2 event types", "topEventTypes", { limit: 2, startTime: start, endTime: end }, model.topEventTypes(sent, b, e, 2)],
    [
      "top event types by plan",
      "topEventTypes",
      { groupByProperty: "plan", groupLimit: 2, startTime: start, endTime: end },
      model.topEventTypes(sent, b, e, 10, 2),
    ],
    ["daily series", "series", { interval: "day", startTime: start, endTime: end }, model.series(sent, b, e, DAY)],
    [
      "daily unique users",
      "series",
      { interval: "day", measure: "uniqueUsers", startTime: start, endTime: end },
      model.series(sent, b, e, DAY, { measure: "uniqueUsers" }),
    ],
    [
      "daily series by plan",
      "series",
      { interval: "day", groupByProperty: "plan", startTime: start, endTime: end },
      model.series(sent, b, e, DAY, { groupLimit: 10 }),
    ],
    [
      "hourly views of the second day",
      "series",
      { interval: "hour", eventType: "view", startTime: new Date(b + DAY), endTime: new Date(b + 2 * DAY) },
      model.series(sent, b + DAY, b + 2 * DAY, HOUR, { eventType: "view" }),
    ],
    [
      "timeseries (the buckets of series) by plan",
      "timeseries",
      { interval: "day", eventType: "view", groupByProperty: "plan", groupLimit: 1, startTime: start, endTime: end },
      model.series(sent, b, e, DAY, { eventType: "view", groupLimit: 1 }).buckets,
    ],
    [
      "funnel within two days",
      "funnel",
      { steps: FUNNEL, conversionWindowMs: twoDays, startTime: start, endTime: new Date(funnelEnd) },
      model.funnel(sent, FUNNEL, twoDays, b, funnelEnd),
    ],
    [
      "funnel within the default 30 days",
      "funnel",
      { steps: FUNNEL, startTime: start, endTime: new Date(funnelEnd) },
      model.funnel(sent, FUNNEL, 30 * DAY, b, funnelEnd),
    ],
    [
      "funnel of pro events only",
      "funnel",
      { steps: FUNNEL, conversionWindowMs: twoDays, properties: { plan: "pro" }, startTime: start, endTime: new Date(funnelEnd) },
      model.funnel(sent, FUNNEL, twoDays, b, funnelEnd, { keep: (event) => event.plan === "pro" }),
    ],
    [
      "funnel by plan",
      "funnel",
      { steps: FUNNEL, conversionWindowMs: twoDays, groupByProperty: "plan", startTime: start, endTime: new Date(funnelEnd) },
      model.funnel(sent, FUNNEL, twoDays, b, funnelEnd, { groupLimit: 10 }),
    ],
    [
      "funnel by plan, one value of its own",
      "funnel",
      { steps: FUNNEL, conversionWindowMs: twoDays, groupByProperty: "plan", groupLimit: 1, startTime: start, endTime: new Date(funnelEnd) },
      model.funnel(sent, FUNNEL, twoDays, b, funnelEnd, { groupLimit: 1 }),
    ],
    [
      "two-step funnel with a 90-minute window",
      "funnel",
      { steps: ["signup", "view"], conversionWindowMs: 90 * 60_000, startTime: start, endTime: end },
      model.funnel(sent, ["signup", "view"], 90 * 60_000, b, e),
    ],
    [
      "daily retention",
      "retention",
      { startEventType: "signup", returnEventType: "view", interval: "day", startTime: start, endTime: end },
      model.retention(sent, "signup", "view", DAY, b, e),
    ],
    [
      "daily retention from a start time within the first day",
      "retention",
      { startEventType: "signup", returnEventType: "view", interval: "day", startTime: new Date(b + 8 * HOUR), endTime: end },
      model.retention(sent, "signup", "view", DAY, b, e),
    ],
    [
      "retention of signup to signup",
      "retention",
      { startEventType: "signup", returnEventType: "signup", interval: "day", startTime: start, endTime: end },
      model.retention(sent, "signup", "signup", DAY, b, e),
    ],
    [
      "weekly retention",
      "retention",
      { startEventType: "signup", returnEventType: "purchase", interval: "week", startTime: start, endTime: new Date(b + 14 * DAY) },
      model.retention(sent, "signup", "purchase", 7 * DAY, b, b + 14 * DAY),
    ],
  ];
}

let db;
let srv;
before(async () => {
  db = freshDatabase();
  srv = await startServer(db.url);
});
after(async () => {
  await srv?.kill();
  db?.drop();
});

test("the model agrees with counting by hand", () => {
  // The events were chosen for these cases; the model must see them as intended.
  const b = Date.UTC(2026, 2, 2);
  const e = b + 6 * DAY;
  const sent = model.events(b);
  assert.deepEqual(model.count(sent, b, e), { count: 24, exact: true });
  assert.equal(model.count(sent, b, e, { measure: "uniqueUsers" }).count, 7); // anonymous views left out
  assert.deepEqual(model.count(sent, b, e, { groupLimit: 10 }).groups, [
    { kind: "value", value: "free", count: 9 },
    { kind: "value", value: "pro", count: 8 },
    { kind: "value", value: 5, count: 2 },
    { kind: "missing", value: undefined, count: 5 },
  ]);
  assert.deepEqual(model.count(sent, b, e, { groupLimit: 1 }).groups, [
    { kind: "value", value: "free", count: 9 },
    { kind: "missing", value: undefined, count: 5 },
    { kind: "other", value: undefined, count: 10 },
  ]);
  assert.deepEqual(
    model.topEventTypes(sent, b, e, 10).map((row) => [row.eventType, row.count]),
    [["view", 12], ["signup", 7], ["purchase", 5]],
  );
  assert.deepEqual(model.series(sent, b, e, DAY, { measure: "uniqueUsers" }).buckets.map((bucket) => bucket.count), [2, 3, 4, 2, 2, 1]);
  // u1 and u4 convert; u2 drops out after the view; u3 buys after the 2-day window; u5
  // buys before the view; u6 views after endTime, inside the conversion window.
  const users = (result) => result.steps.map((step) => step.users);
  assert.deepEqual(users(model.funnel(sent, FUNNEL, 2 * DAY, b, b + 5 * DAY)), [6, 6, 2]);
  assert.deepEqual(users(model.funnel(sent, FUNNEL, 30 * DAY, b, b + 5 * DAY)), [6, 6, 3]);
  assert.deepEqual(
    model.funnel(sent, FUNNEL, 2 * DAY, b, b + 5 * DAY, { groupLimit: 10 }).groups.map((group) => [group.kind, group.value, users(group)]),
    [["value", "pro", [3, 3, 1]], ["value", "free", [2, 2, 0]], ["missing", undefined, [1, 1, 1]]],
  );
  assert.deepEqual(
    model.retention(sent, "signup", "view", DAY, b, e).map((cohort) => [cohort.users, cohort.returned]),
    [[2, [2, 1, 1, 1, 0, 0]], [2, [2, 0, 0, 0, 0]], [0, [0, 0, 0, 0]], [1, [1, 0, 0]], [1, [0, 1]], [0, [0]]],
  );
  assert.deepEqual(model.retention(sent, "signup", "signup", DAY, b, e)[4].returned, [0, 1]);
});

test("every analytics helper answers what the events say", async () => {
  const base = model.baseDay();
  const client = createClient({ baseUrl: srv.grpcUrl, apiKey: API_KEY });
  model.trackAll(client, model.events(base));
  assert.equal(await client.flush(30_000), true);
  assert.equal(client.stats().accepted, model.SCRIPT.length);
  for (const [what, method, options, expected] of cases(base)) {
    assert.deepEqual(await client[method](options), expected, what);
  }
  // Times are Dates at UTC bucket starts; the server answers what the options ask.
  const daily = await client.series({ interval: "day", startTime: new Date(base), endTime: new Date(base + 2 * DAY) });
  assert.ok(daily.buckets[0].startTime instanceof Date);
  assert.equal(daily.buckets[0].startTime.getTime(), base);
  const late = await client.funnel({
    steps: ["signup", "view"],
    conversionWindowMs: 2 * HOUR,
    startTime: new Date(base + 3 * DAY),
    endTime: new Date(base + 5 * DAY),
  });
  assert.deepEqual(late, { steps: [{ eventType: "signup", users: 2 }, { eventType: "view", users: 1 }] });
  assert.deepEqual(await client.shutdown(), { accepted: model.SCRIPT.length, duplicates: 0, rejected: 0, dropped: 0, failed: 0 });
});

test("the helpers refuse bad options naming them, before any request", async () => {
  // Nothing listens there: the checks must not depend on the network.
  const client = createClient({ baseUrl: `http://127.0.0.1:${await freePort()}`, apiKey: "unused" });
  const refusals = [
    ["funnel", { steps: [] }, RangeError, /^steps: must hold 2 to 10 event types, got 0$/],
    ["funnel", { steps: ["signup"] }, RangeError, /^steps: must hold 2 to 10 event types, got 1$/],
    ["funnel", { steps: Array(11).fill("s") }, RangeError, /^steps: .* got 11$/],
    ["funnel", { steps: "signup" }, TypeError, /^steps: must be an array/],
    ["funnel", { steps: ["signup", ""] }, RangeError, /^steps\[1\]: must be 1 to 128 characters/],
    ["funnel", { steps: ["a", "b"], conversionWindowMs: 0 }, RangeError, /^conversionWindowMs: must be more than 0/],
    ["funnel", { steps: ["a", "b"], conversionWindowMs: 90 * DAY + 1 }, RangeError, /^conversionWindowMs:/],
    ["funnel", { steps: ["a", "b"], conversionWindowMs: "1d" }, TypeError, /^conversionWindowMs: must be a number/],
    ["funnel", { steps: ["a", "b"], groupLimit: 3 }, RangeError, /^groupLimit: needs groupByProperty$/],
    ["funnel", { steps: ["a", "b"], groupByProperty: "p", groupLimit: 101 }, RangeError, /^groupLimit: must be 1 to 100/],
    ["count", { measure: "users" }, RangeError, /^measure: must be "events" or "uniqueUsers", got users$/],
    ["count", { measure: "uniqueUsers", groupByProperty: "plan" }, RangeError, /^groupByProperty: cannot be combined/],
    ["count", { groupByProperty: "x".repeat(129) }, RangeError, /^groupByProperty: must be 1 to 128/],
    ["count", { startTime: new Date(Date.UTC(2026, 0, 2)), endTime: new Date(Date.UTC(2026, 0, 1)) }, RangeError, /^startTime: must be before endTime$/],
    ["count", { startTime: new Date("nonsense") }, TypeError, /^startTime: must be a valid Date/],
    ["countEvents", { measure: "sessions" }, RangeError, /^measure:/],
    ["topEventTypes", { limit: 0 }, RangeError, /^limit: must be 1 to 1000, got 0$/],
    ["topEventTypes", { limit: 2.5 }, TypeError, /^limit: must be an integer/],
    ["series", { interval: "week" }, RangeError, /^interval: must be "minute", "hour" or "day", got week$/],
    ["timeseries", { interval: "day", measure: "uniqueUsers", groupByProperty: "p" }, RangeError, /^groupByProperty:/],
    ["retention", { startEventType: "signup", returnEventType: "view", interval: "month" }, RangeError, /^interval: must be "day" or "week", got month$/],
    ["retention", { startEventType: "", returnEventType: "view", interval: "day" }, RangeError, /^startEventType: must be 1 to 128/],
    ["retention", { startEventType: "signup", interval: "day" }, TypeError, /^returnEventType: must be a string/],
  ];
  for (const [method, options, type, message] of refusals) {
    await assert.rejects(client[method](options), (error) => {
      assert.ok(error instanceof type, `${method} ${JSON.stringify(options)}: ${error}`);
      assert.match(error.message, message);
      return true;
    });
  }
  await client.shutdown(0);
});
