// The test page: @segment/analytics-next and posthog-js as a site bundles them, each
// pointed at eventline by its one-line change (Segment: `cdnURL`; PostHog: `api_host`).
// The test calls window.runSegment(n) and window.runPosthog(n); each returns what every
// event should be stored as.
import { AnalyticsBrowser } from "@segment/analytics-next";
import posthog from "posthog-js";

const params = new URLSearchParams(location.search);
const server = params.get("server");
const key = params.get("key");

window.runSegment = async (count) => {
  const analytics = AnalyticsBrowser.load({ writeKey: key, cdnURL: server });
  const user = "seg-web-user";
  const expected = [];
  const sent = async (promise, want) => {
    const context = await promise;
    expected.push({ id: context.event.messageId, ...want });
  };
  // analytics.js keeps one current user: identify first, alias (which changes it) last.
  await sent(analytics.identify(user, { plan: "pro" }), { type: "$identify", user, properties: { $set: { plan: "pro" } } });
  // analytics.js merges each identify's traits into the ones it keeps.
  const calls = [];
  for (let n = 0; n < count; n++) {
    calls.push(sent(analytics.track("Order Completed", { n }), { type: "Order Completed", user, properties: { n, $lib: "analytics.js" } }));
    calls.push(sent(analytics.page("Docs", "Home", { n }), { type: "$pageview", user, properties: { n, $page_name: "Home", $page_category: "Docs" } }));
    calls.push(sent(analytics.screen("Settings", { n }), { type: "$screen", user, properties: { n } }));
    calls.push(sent(analytics.group(`org-${n}`, { seats: n }), { type: "$groupidentify", user, properties: { $group_key: `org-${n}`, $group_set: { seats: n } } }));
    if (n > 0) calls.push(sent(analytics.identify(user, { n }), { type: "$identify", user, properties: { $set: { plan: "pro", n } } }));
  }
  await Promise.all(calls);
  for (let n = 0; n < count; n++) {
    // analytics.js 1.84 sends the current user as userId (not `to`), so `alias` is it too.
    await sent(analytics.alias(`seg-web-new-${n}`, user), { type: "$create_alias", user, properties: { alias: user } });
  }
  return expected;
};

window.runPosthog = async (count) => {
  await new Promise((resolve) => {
    posthog.init(key, {
      api_host: server,
      // Only the events this test sends, so it can count them exactly.
      autocapture: false,
      capture_pageview: false,
      capture_pageleave: false,
      request_queue_config: { flush_interval_ms: 100 },
      // posthog-js drops events from automated browsers (navigator.webdriver, headless
      // user agents); its own advice for end-to-end tests is this setting.
      opt_out_useragent_filter: true,
      loaded: () => resolve(),
    });
  });
  const expected = [];
  for (let n = 0; n < count; n++) {
    const user = `ph-web-user-${n}`;
    posthog.reset();
    posthog.identify(user, { n });
    expected.push({ type: "$identify", user, properties: { $set: { n } } });
    const captured = posthog.capture("order completed", { n });
    expected.push({ id: captured.uuid, type: "order completed", user, properties: { n, $lib: "web" } });
    const pageview = posthog.capture("$pageview", { n });
    expected.push({ id: pageview.uuid, type: "$pageview", user, properties: { n } });
    const screen = posthog.capture("$screen", { $screen_name: "Settings", n });
    expected.push({ id: screen.uuid, type: "$screen", user, properties: { $screen_name: "Settings", n } });
    posthog.group("company", `org-${n}`, { seats: n });
    expected.push({ type: "$groupidentify", user, properties: { $group_type: "company", $group_key: `org-${n}` } });
    posthog.alias(`ph-web-alias-${n}`);
    expected.push({ type: "$create_alias", user, properties: { alias: `ph-web-alias-${n}` } });
  }
  return expected;
};
