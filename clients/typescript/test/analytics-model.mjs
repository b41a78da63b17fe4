// Known events for the analytics tests, and a plain model of what each analytics query
// should answer for them (the semantics written in proto/eventline/v1/query.proto),
// computed from the events alone: the tests compare the server's answers with it.
// The same events as clients/python/tests/analytics_data.py.

export const DAY = 86_400_000;
export const HOUR = 3_600_000;
const MISSING = undefined; // an event without the "plan" property

// [user, type, day, hour, minute, plan]: six days from `base`, seven users, three types,
// events without a user, a "plan" property with string values, a number and no value.
export const SCRIPT = [
  ["u1", "signup", 0, 9, 0, "pro"],
  ["u1", "view", 0, 10, 0, "pro"],
  ["u1", "purchase", 0, 11, 0, "pro"],
  ["u1", "view", 1, 9, 0, "pro"],
  ["u1", "view", 3, 12, 0, MISSING],
  ["u2", "signup", 0, 12, 0, "free"],
  ["u2", "view", 0, 13, 0, "free"],
  ["u2", "view", 2, 8, 0, "free"], // never purchases: drops out of the funnel
  ["u3", "signup", 1, 8, 0, "pro"],
  ["u3", "view", 1, 9, 30, "pro"],
  ["u3", "purchase", 4, 9, 0, "pro"], // 3 days after signing up: outside a 2-day window
  ["u4", "signup", 1, 10, 0, MISSING],
  ["u4", "view", 1, 10, 0, MISSING], // the same instant as the signup: in order
  ["u4", "purchase", 2, 9, 0, MISSING],
  ["u5", "view", 2, 10, 0, "free"], // before the signup: not a funnel step
  ["u5", "signup", 3, 11, 0, "free"],
  ["u5", "purchase", 3, 11, 30, "free"], // before the view: not the third step
  ["u5", "view", 3, 12, 0, "free"],
  ["u6", "signup", 4, 15, 0, "pro"],
  ["u6", "signup", 5, 9, 0, 5], // the number 5; after the funnel's window
  ["u6", "view", 5, 10, 0, 5], // after the funnel's window, within the conversion window
  [null, "view", 2, 14, 0, "free"],
  [null, "view", 4, 16, 0, MISSING],
  ["u7", "purchase", 2, 20, 0, "free"],
];

/** A UTC midnight a week ago (ms): every event is in the past, and all in one window. */
export function baseDay(now = Date.now()) {
  return Math.floor(now / DAY) * DAY - 7 * DAY;
}

/** The events as sent: { index, userId, eventType, time (ms), plan }. */
export function events(base) {
  return SCRIPT.map(([userId, eventType, day, hour, minute, plan], index) => ({
    index,
    userId,
    eventType,
    time: base + day * DAY + hour * HOUR + minute * 60_000,
    plan,
  }));
}

export function trackAll(client, sent) {
  for (const event of sent) {
    client.track(event.eventType, {
      ...(event.userId !== null && { userId: event.userId }),
      properties: event.plan === MISSING ? {} : { plan: event.plan },
      timestamp: new Date(event.time),
    });
  }
}

// -- the model -----------------------------------------------------------------------------

function inWindow(sent, start, end, eventType) {
  return sent.filter((e) => start <= e.time && e.time < end && (eventType === undefined || e.eventType === eventType));
}

const key = (value) => JSON.stringify(value);
const compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

function tally(selected) {
  const counts = new Map();
  for (const e of selected) if (e.plan !== MISSING) counts.set(key(e.plan), (counts.get(key(e.plan)) ?? 0) + 1);
  return counts;
}

/** The values with a group of their own (largest first, ties by value), and whether there are "missing" and "other" events. */
function groupOrder(selected, limit) {
  const counts = tally(selected);
  const ranked = [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || compare(a, b));
  return { values: ranked.slice(0, limit), missing: selected.some((e) => e.plan === MISSING), other: ranked.length > limit };
}

function groups(selected, order, keepZeros = false) {
  const counts = tally(selected);
  const result = order.values.map((value) => ({ kind: "value", value: JSON.parse(value), count: counts.get(value) ?? 0 }));
  if (order.missing) result.push({ kind: "missing", value: undefined, count: selected.filter((e) => e.plan === MISSING).length });
  if (order.other) {
    let other = 0;
    for (const [value, count] of counts) if (!order.values.includes(value)) other += count;
    result.push({ kind: "other", value: undefined, count: other });
  }
  return keepZeros ? result : result.filter((group) => group.count > 0);
}

const uniqueUsers = (selected) => new Set(selected.filter((e) => e.userId !== null).map((e) => e.userId)).size;

export function count(sent, start, end, { eventType, measure = "events", groupLimit } = {}) {
  const selected = inWindow(sent, start, end, eventType);
  if (measure === "uniqueUsers") return { count: uniqueUsers(selected), exact: true };
  if (groupLimit === undefined) return { count: selected.length, exact: true };
  return { count: selected.length, exact: true, groups: groups(selected, groupOrder(selected, groupLimit)) };
}

export function topEventTypes(sent, start, end, limit, groupLimit) {
  const selected = inWindow(sent, start, end);
  const counts = new Map();
  for (const e of selected) counts.set(e.eventType, (counts.get(e.eventType) ?? 0) + 1);
  const ranked = [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || compare(a, b)).slice(0, limit);
  return ranked.map((eventType) => {
    const ofType = selected.filter((e) => e.eventType === eventType);
    return {
      eventType,
      count: counts.get(eventType),
      ...(groupLimit !== undefined && { groups: groups(ofType, groupOrder(ofType, groupLimit)) }),
    };
  });
}

/** Buckets of `width` ms (an hour or a day; `start` is already aligned). */
export function series(sent, start, end, width, { eventType, measure = "events", groupLimit } = {}) {
  const selected = inWindow(sent, start, end, eventType);
  const order = groupLimit === undefined ? undefined : groupOrder(selected, groupLimit);
  const buckets = [];
  for (let at = start; at < end; at += width) {
    const inside = selected.filter((e) => at <= e.time && e.time < at + width);
    buckets.push({
      startTime: new Date(at),
      count: measure === "uniqueUsers" ? uniqueUsers(inside) : inside.length,
      ...(order !== undefined && { groups: groups(inside, order, true) }),
    });
  }
  return { buckets, exact: true };
}

function byUser(sent, keep) {
  const users = new Map();
  for (const e of [...sent].sort((a, b) => a.time - b.time || a.index - b.index)) {
    if (e.userId === null || !keep(e)) continue;
    if (!users.has(e.userId)) users.set(e.userId, []);
    users.get(e.userId).push(e);
  }
  return users;
}

/**
 * Each user enters at their first steps[0] event in [start, end); each next step is the
 * earliest unused event of its type at or after the previous step's, at most `windowMs`
 * after entering (the earliest choice is never worse for the next steps).
 */
export function funnel(sent, steps, windowMs, start, end, { keep = () => true, groupLimit } = {}) {
  const reached = [];
  for (const history of byUser(sent, keep).values()) {
    const entering = history.find((e) => e.eventType === steps[0] && start <= e.time && e.time < end);
    if (entering === undefined) continue;
    const used = new Set([entering.index]);
    let last = entering.time;
    let depth = 1;
    for (const step of steps.slice(1)) {
      const next = history.find(
        (e) => e.eventType === step && !used.has(e.index) && last <= e.time && e.time <= entering.time + windowMs,
      );
      if (next === undefined) break;
      used.add(next.index);
      last = next.time;
      depth++;
    }
    reached.push({ depth, entering });
  }
  const stepCounts = (users) =>
    steps.map((eventType, index) => ({ eventType, users: users.filter((user) => user.depth > index).length }));
  if (groupLimit === undefined) return { steps: stepCounts(reached) };
  const order = groupOrder(
    reached.map((user) => user.entering),
    groupLimit,
  );
  const split = order.values.map((value) => ({
    kind: "value",
    value: JSON.parse(value),
    steps: stepCounts(reached.filter((user) => user.entering.plan !== MISSING && key(user.entering.plan) === value)),
  }));
  if (order.missing) {
    split.push({ kind: "missing", value: undefined, steps: stepCounts(reached.filter((user) => user.entering.plan === MISSING)) });
  }
  if (order.other) {
    const rest = reached.filter((user) => user.entering.plan !== MISSING && !order.values.includes(key(user.entering.plan)));
    split.push({ kind: "other", value: undefined, steps: stepCounts(rest) });
  }
  return { steps: stepCounts(reached), groups: split };
}

/**
 * `start` is a UTC midnight. A user's cohort is the interval of their first start event in
 * the window; returned[k] holds the users with a return event k intervals later (in their
 * own interval: at or after the first start event, and another event).
 */
export function retention(sent, startType, returnType, width, start, end) {
  const intervals = Math.ceil((end - start) / width);
  const users = Array.from({ length: intervals }, () => new Set());
  const returned = Array.from({ length: intervals }, (_, cohort) => Array.from({ length: intervals - cohort }, () => new Set()));
  for (const [user, history] of byUser(sent, () => true)) {
    const first = history.find((e) => e.eventType === startType && start <= e.time && e.time < end);
    if (first === undefined) continue;
    const cohort = Math.floor((first.time - start) / width);
    users[cohort].add(user);
    for (const e of history) {
      if (e.eventType === returnType && e !== first && first.time <= e.time && e.time < end) {
        returned[cohort][Math.floor((e.time - start) / width) - cohort].add(user);
      }
    }
  }
  return users.map((cohortUsers, cohort) => ({
    startTime: new Date(start + cohort * width),
    users: cohortUsers.size,
    returned: returned[cohort].map((set) => set.size),
  }));
}
