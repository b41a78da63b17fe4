// The real @segment/analytics-node and posthog-node SDKs, unmodified, sending to
// eventline's drop-in capture doors: every call type read back through ListEvents and
// CountEvents, each event stored exactly once with its mapped type and properties; a
// server SIGKILLed mid-flush and restarted, and a key over its rate limit (429 +
// Retry-After), with the SDKs' own retries leaving every event stored once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Analytics } from "@segment/analytics-node";
import { PostHog } from "posthog-node";
import { API_KEY, Server, assertEachStoredOnce, sleep, until } from "../harness.mjs";

const PER_CALL = 100; // events of each call type per SDK

function segmentClient(server, options = {}) {
  const client = new Analytics({ writeKey: API_KEY, host: server.url, flushAt: 100, flushInterval: 100, maxRetries: 10, ...options });
  const failures = [];
  client.on("error", (error) => failures.push(String(error?.reason ?? error?.code ?? error)));
  return { client, failures };
}

function posthogClient(server, options = {}) {
  const failures = [];
  const client = new PostHog(API_KEY, { host: server.url, flushAt: 100, flushInterval: 100, fetchRetryCount: 6, fetchRetryDelay: 500, ...options });
  client.on("error", (error) => failures.push(String(error)));
  return { client, failures };
}

/** Every Segment call type, `count` each; returns what each should be stored as. */
function sendSegment(client, prefix, count = PER_CALL) {
  const expected = [];
  for (let n = 0; n < count; n++) {
    const user = `${prefix}-user-${n % 17}`;
    const anon = `${prefix}-anon-${n}`;
    const id = (call) => `${prefix}-${call}-${n}`;
    client.track({ userId: user, event: "Order Completed", properties: { n, total: n * 1.5 }, messageId: id("track") });
    expected.push({ id: id("track"), type: "Order Completed", user, properties: { n, total: n * 1.5, $lib: "@segment/analytics-node" } });
    client.identify({ userId: user, anonymousId: anon, traits: { plan: "pro", n }, messageId: id("identify") });
    expected.push({ id: id("identify"), type: "$identify", user, properties: { $set: { plan: "pro", n }, $anonymous_id: anon } });
    client.page({ anonymousId: anon, name: "Home", properties: { url: `https://example.com/${n}` }, messageId: id("page") });
    expected.push({ id: id("page"), type: "$pageview", user: anon, properties: { $current_url: `https://example.com/${n}`, $page_name: "Home" } });
    client.screen({ userId: user, name: "Settings", properties: { n }, messageId: id("screen") });
    expected.push({ id: id("screen"), type: "$screen", user, properties: { $screen_name: "Settings", n } });
    client.group({ userId: user, groupId: `org-${n % 5}`, traits: { seats: n }, messageId: id("group") });
    expected.push({ id: id("group"), type: "$groupidentify", user, properties: { $group_key: `org-${n % 5}`, $group_set: { seats: n } } });
    client.alias({ userId: user, previousId: anon, messageId: id("alias") });
    expected.push({ id: id("alias"), type: "$create_alias", user: anon, properties: { alias: user } });
  }
  return expected;
}

/** Every posthog-node call type, `count` each; returns what each should be stored as. */
function sendPosthog(client, prefix, count = PER_CALL) {
  const expected = [];
  for (let n = 0; n < count; n++) {
    const user = `${prefix}-user-${n}`;
    const ids = [randomUUID(), randomUUID()];
    client.capture({ distinctId: user, event: "order completed", properties: { n }, uuid: ids[0] });
    expected.push({ id: ids[0], type: "order completed", user, properties: { n, $lib: "posthog-node" } });
    client.capture({ distinctId: user, event: "$pageview", properties: { $current_url: `https://example.com/${n}` }, uuid: ids[1] });
    expected.push({ id: ids[1], type: "$pageview", user, properties: { $current_url: `https://example.com/${n}` } });
    // identify, groupIdentify and alias take no uuid: the SDK assigns one, found here by
    // type and user (unique per call).
    client.identify({ distinctId: user, properties: { plan: "pro", n } });
    expected.push({ type: "$identify", user, properties: { $set: { plan: "pro", n } } });
    client.groupIdentify({ groupType: "company", groupKey: `org-${n}`, properties: { seats: n }, distinctId: `${prefix}-group-${n}` });
    expected.push({ type: "$groupidentify", user: `${prefix}-group-${n}`, properties: { $group_type: "company", $group_key: `org-${n}` } });
    client.alias({ distinctId: user, alias: `${prefix}-alias-${n}` });
    expected.push({ type: "$create_alias", user, properties: { alias: `${prefix}-alias-${n}` } });
  }
  return expected;
}

test("@segment/analytics-node: every call type stored once with its mapped type", async () => {
  const server = await Server.start();
  try {
    const { client, failures } = segmentClient(server);
    const expected = sendSegment(client, "seg-node");
    await client.closeAndFlush({ timeout: 60_000 });
    assert.deepEqual(failures, []);
    assertEachStoredOnce(await server.events(), expected);
    assert.equal(await server.count(), 6 * PER_CALL);
    assert.equal(await server.metric('eventline_capture_events_total{door="segment",outcome="accepted"}'), expected.length);
  } finally {
    await server.stop();
  }
});

test("posthog-node: every call type stored once with its mapped type (gzip bodies)", async () => {
  const server = await Server.start();
  try {
    const { client, failures } = posthogClient(server);
    const expected = sendPosthog(client, "ph-node");
    await client.shutdown(60_000);
    assert.deepEqual(failures, []);
    assertEachStoredOnce(await server.events(), expected);
    assert.equal(await server.count(), expected.length);
  } finally {
    await server.stop();
  }
});

test("both Node SDKs: a server SIGKILLed mid-flush and restarted, every event stored once", async () => {
  const server = await Server.start();
  try {
    const segment = segmentClient(server, { flushAt: 50, flushInterval: 20 });
    const posthog = posthogClient(server, { flushAt: 50, flushInterval: 20 });
    const expected = [...sendSegment(segment.client, "kill-seg"), ...sendPosthog(posthog.client, "kill-ph")];
    const flushed = Promise.all([segment.client.closeAndFlush({ timeout: 120_000 }), posthog.client.shutdown(120_000)]);
    await until(async () => (await server.count()) > 0, 30_000, "the first stored events");
    await server.kill();
    await sleep(1000);
    await server.start();
    const storedAtRestart = await server.count();
    await flushed;
    assert.ok(storedAtRestart < expected.length, "the kill came after everything was sent");
    assert.deepEqual([...segment.failures, ...posthog.failures], []);
    assertEachStoredOnce(await server.events(), expected);
    assert.equal(await server.count(), expected.length);
  } finally {
    await server.stop();
  }
});

test("both Node SDKs back off on 429 with Retry-After and lose nothing", async () => {
  const server = await Server.start({ EVENTLINE_LIMITS_EVENTS_PER_SECOND_PER_KEY: "400" });
  try {
    const segment = segmentClient(server);
    const posthog = posthogClient(server, { fetchRetryCount: 10, fetchRetryDelay: 1000 });
    const expected = [...sendSegment(segment.client, "rl-seg", 60), ...sendPosthog(posthog.client, "rl-ph", 60)];
    await Promise.all([segment.client.closeAndFlush({ timeout: 120_000 }), posthog.client.shutdown(120_000)]);
    const refused =
      ((await server.metric('eventline_capture_requests_total{door="segment",status="429"}')) ?? 0) +
      ((await server.metric('eventline_capture_requests_total{door="posthog",status="429"}')) ?? 0);
    assert.ok(refused > 0, "660 events at 400/s should have met the rate limit");
    assert.deepEqual([...segment.failures, ...posthog.failures], []);
    assertEachStoredOnce(await server.events(), expected);
  } finally {
    await server.stop();
  }
});
