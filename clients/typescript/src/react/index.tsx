/**
 * @eventline/client/react: `<EventlineProvider client={…}>`, `useTrack()` and
 * `usePageView()`. React is a peer dependency; the client is created by the app.
 */
import { createContext, useCallback, useContext, useEffect, useRef, type ReactNode } from "react";
import type { TrackOptions } from "../core/event.js";

/** What the hooks need from a client: the browser or the Node one both fit. */
export interface Tracker {
  track(eventType: string, options?: TrackOptions): string;
}

const EventlineContext = createContext<Tracker | null>(null);

/** Makes `client` available to `useTrack()` and `usePageView()` below it. */
export function EventlineProvider(props: { client: Tracker; children?: ReactNode }) {
  return <EventlineContext.Provider value={props.client}>{props.children}</EventlineContext.Provider>;
}

function useClient(): Tracker {
  const client = useContext(EventlineContext);
  if (client === null) throw new Error("useTrack/usePageView: wrap the tree in <EventlineProvider client={…}>");
  return client;
}

/**
 * Returns a `track(eventType, options)` function whose identity never changes, so it
 * can go into dependency lists and memoized children without re-rendering them.
 */
export function useTrack(): (eventType: string, options?: TrackOptions) => string {
  const client = useClient();
  const current = useRef(client);
  current.current = client;
  return useCallback((eventType: string, options?: TrackOptions) => current.current.track(eventType, options), []);
}

/**
 * Tracks a `page_view` (or `eventType`) once per distinct `path` (default:
 * `location.pathname`), with `path`, `title` and `referrer` properties.
 */
export function usePageView(options: { path?: string; eventType?: string; properties?: Record<string, unknown> } = {}): void {
  const track = useTrack();
  const path = options.path ?? (typeof location === "undefined" ? "" : location.pathname);
  const eventType = options.eventType ?? "page_view";
  const extra = useRef(options.properties);
  extra.current = options.properties;
  useEffect(() => {
    track(eventType, {
      properties: {
        path,
        title: typeof document === "undefined" ? "" : document.title,
        referrer: typeof document === "undefined" ? "" : document.referrer,
        ...extra.current,
      },
    });
  }, [track, path, eventType]);
}
