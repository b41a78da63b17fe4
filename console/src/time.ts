// Time windows shared by the views: presets (24h, 7d, 30d) ending now, or custom.
import type { Query } from "./state";

export const PRESETS: Record<string, number> = { "24h": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000 };

export interface Window {
  start: string;
  end: string;
}

/** The window in `query`: `range` is a preset, or `custom` with `from` and `to` (RFC 3339). */
export function windowOf(query: Query, fallback = "7d"): Window {
  const range = query.get("range") ?? fallback;
  if (range === "custom") {
    const from = Date.parse(query.get("from") ?? "");
    const to = Date.parse(query.get("to") ?? "");
    const end = Number.isNaN(to) ? Date.now() : to;
    const start = Number.isNaN(from) ? end - PRESETS["7d"] : from;
    return { start: new Date(start).toISOString(), end: new Date(end).toISOString() };
  }
  const span = PRESETS[range] ?? PRESETS[fallback];
  // Rounded to the minute so a re-render does not ask for a new window each time.
  const end = Math.ceil(Date.now() / 60_000) * 60_000;
  return { start: new Date(end - span).toISOString(), end: new Date(end).toISOString() };
}

/** A `<input type=datetime-local>` value (UTC) for an RFC 3339 time, and back. */
export function toLocalInput(iso: string): string {
  return iso ? iso.slice(0, 16) : "";
}

export function fromLocalInput(value: string): string {
  return value ? `${value}:00Z` : "";
}

export function formatTime(iso: string): string {
  return iso.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "").slice(0, 19);
}
