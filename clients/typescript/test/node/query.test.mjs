// Query helpers against the real server: paging and a tail that survives a restart.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "../../dist/node/index.js";
import { API_KEY, exactlyOnce, freshDatabase, startServer } from "../harness.mjs";

const db = freshDatabase();
let srv;
after(async () => {
  await srv?.kill();
  db.drop();
});

test("listEvents pages through 2,500 events, each exactly once", async () => {
  srv = await startServer(db.url);
  const client = createClient({ baseUrl: srv.grpcUrl, apiKey: API_KEY });
  const ids = new Set();
  for (let index = 0; index < 2_500; index++) ids.add(client.track("paged", { userId: "pager", properties: { index } }));
  assert.equal(await client.flush(30_000), true);
  const listed = [];
  for await (const event of client.listEvents({ userId: "pager", pageSize: 100 })) listed.push(event.eventId);
  assert.equal(listed.length, 2_500);
  assert.deepEqual(exactlyOnce(listed, ids), { repeated: [], missing: [], extra: [] });
  const top = await client.topEventTypes({ limit: 5 });
  assert.deepEqual(top, [{ eventType: "paged", count: 2_500 }]);
  const buckets = await client.timeseries({ interval: "day", eventType: "paged", startTime: new Date(Date.now() - 86_400_000) });
  assert.equal(buckets.reduce((sum, bucket) => sum + bucket.count, 0), 2_500);
  await client.shutdown();
});

test("a tail resumes after the server restarts, without a gap or a repeat", async () => {
  const client = createClient({ baseUrl: srv.grpcUrl, apiKey: API_KEY });
  const expected = new Set();
  for (let index = 0; index < 100; index++) expected.add(client.track("tailed", { properties: { index } }));
  assert.equal(await client.flush(30_000), true);
  const seen = [];
  const tail = client.tail({ eventType: "tailed", startTime: new Date(Date.now() - 3_600_000) });
  while (seen.length < 40) seen.push((await tail.next()).value.event.eventId);
  await srv.kill();
  srv = await startServer(db.url, { ports: srv.ports });
  for (let index = 0; index < 50; index++) expected.add(client.track("tailed", { properties: { live: index } }));
  while (seen.length < 150) seen.push((await tail.next()).value.event.eventId);
  await tail.return();
  assert.deepEqual(exactlyOnce(seen, expected), { repeated: [], missing: [], extra: [] });
  // And by hand: a new tail from a cursor continues right after that event.
  const first = client.tail({ eventType: "tailed", startTime: new Date(Date.now() - 3_600_000) });
  const ten = [];
  for (let index = 0; index < 10; index++) ten.push((await first.next()).value);
  await first.return();
  const resumed = client.tail({ eventType: "tailed", cursor: ten[9].cursor });
  const rest = [];
  while (rest.length < 140) rest.push((await resumed.next()).value.event.eventId);
  await resumed.return();
  assert.deepEqual(exactlyOnce([...ten.map((item) => item.event.eventId), ...rest], expected), { repeated: [], missing: [], extra: [] });
  await client.shutdown();
});
