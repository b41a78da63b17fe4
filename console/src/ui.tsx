// Pieces every view uses: loading with errors in place, the window picker, the filter
// fields and the event-type suggestions.
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { call } from "./api";
import { type Query, update } from "./state";
import { PRESETS, type Window, fromLocalInput, toLocalInput } from "./time";

export interface Loaded<T> {
  data: T | undefined;
  error: string;
  loading: boolean;
}

/**
 * Runs `load` whenever `key` changes (aborting the previous run) and keeps the last data
 * while the next loads, so nothing jumps; `key` "" means there is nothing to load. It is
 * loading from the very render that changes `key`, not from the effect after it.
 */
export function useLoad<T>(key: string, load: (signal: AbortSignal) => Promise<T>): Loaded<T> {
  const [state, setState] = useState<{ key: string; data?: T; error: string }>({ key: "", error: "" });
  useEffect(() => {
    if (key === "") return;
    const controller = new AbortController();
    load(controller.signal).then(
      (data) => {
        setState({ key, data, error: "" });
        markFirstData();
      },
      (error: Error) => {
        if (!controller.signal.aborted) setState({ key, error: error.message });
      },
    );
    return () => controller.abort();
  }, [key]);
  if (key === "") return { data: undefined, error: "", loading: false };
  return { data: state.data, error: state.error, loading: state.key !== key };
}

let marked = false;
/** Marks the first data on screen: the tests read it as the first meaningful paint. */
export function markFirstData(): void {
  if (marked) return;
  marked = true;
  requestAnimationFrame(() => performance.mark("eventline:first-data"));
}

export function ErrorNote({ error }: { error: string }) {
  if (!error) return null;
  return (
    <p class="error" role="alert" data-testid="error">
      {error}
    </p>
  );
}

export function Panel({ title, children, busy }: { title?: string; children: ComponentChildren; busy?: boolean }) {
  return (
    <section class={busy ? "panel busy" : "panel"} aria-busy={busy ? "true" : "false"}>
      {title && <h2>{title}</h2>}
      {children}
    </section>
  );
}

/** Presets and a custom range, written to `range`, `from` and `to`. */
export function WindowPicker({ query, window, fallback = "7d" }: { query: Query; window: Window; fallback?: string }) {
  const range = query.get("range") ?? fallback;
  return (
    <fieldset class="window">
      <legend class="sr">Time window</legend>
      <div class="segmented" role="group" aria-label="Time window">
        {[...Object.keys(PRESETS), "custom"].map((name) => (
          <button
            type="button"
            aria-pressed={range === name ? "true" : "false"}
            onClick={() =>
              update(name === "custom" ? { range: name, from: window.start, to: window.end } : { range: name, from: undefined, to: undefined })
            }
          >
            {name}
          </button>
        ))}
      </div>
      {range === "custom" && (
        <span class="custom">
          <label>
            From (UTC){" "}
            <input type="datetime-local" value={toLocalInput(window.start)} onChange={(event) => update({ from: fromLocalInput(event.currentTarget.value) })} />
          </label>
          <label>
            To (UTC){" "}
            <input type="datetime-local" value={toLocalInput(window.end)} onChange={(event) => update({ to: fromLocalInput(event.currentTarget.value) })} />
          </label>
        </span>
      )}
    </fieldset>
  );
}

/**
 * What a text field shows: `current` (from the URL) until the user types, then what they
 * typed, so a re-render while data loads never wipes a half-typed value.
 */
export function useDraft(current: string): [string, (value: string) => void] {
  const [draft, setDraft] = useState(current);
  useEffect(() => setDraft(current), [current]);
  return [draft, setDraft];
}

/** A labelled text field bound to a query name, applied on change (Enter or leaving it). */
export function Field({ label, name, query, placeholder, list, testid }: { label: string; name: string; query: Query; placeholder?: string; list?: string; testid?: string }) {
  const [draft, setDraft] = useDraft(query.getAll(name).join(", "));
  const apply = (value: string) => update({ [name]: name === "prop" ? splitFilters(value) : value.trim(), t: undefined, event: undefined });
  return (
    <label class="field">
      <span>{label}</span>
      <input
        name={name}
        value={draft}
        placeholder={placeholder}
        list={list}
        data-testid={testid ?? `filter-${name}`}
        autocomplete="off"
        onInput={(event) => setDraft(event.currentTarget.value)}
        onChange={(event) => apply(event.currentTarget.value)}
        onKeyDown={(event) => event.key === "Enter" && apply(event.currentTarget.value)}
      />
    </label>
  );
}

/** `plan=pro, seats=5` as separate property filters. */
export function splitFilters(value: string): string[] {
  return value
    .split(",")
    .map((filter) => filter.trim())
    .filter(Boolean);
}

/** A datalist of the window's most frequent event types, for the type fields. */
export function EventTypes({ window }: { window: Window }) {
  const hour = (iso: string) => iso.slice(0, 13);
  const { data } = useLoad(`${hour(window.start)}|${hour(window.end)}`, (signal) =>
    call<{ event_types: { event_type: string }[] }>("/v1/stats/top-event-types", { start_time: window.start, end_time: window.end, limit: 50 }, { signal }),
  );
  return (
    <datalist id="event-types">
      {data?.event_types.map((item) => (
        <option value={item.event_type} />
      ))}
    </datalist>
  );
}

export function Select({ label, name, query, options, fallback }: { label: string; name: string; query: Query; options: [string, string][]; fallback: string }) {
  return (
    <label class="field">
      <span>{label}</span>
      <select name={name} data-testid={`select-${name}`} value={query.get(name) ?? fallback} onChange={(event) => update({ [name]: event.currentTarget.value })}>
        {options.map(([value, text]) => (
          <option value={value}>{text}</option>
        ))}
      </select>
    </label>
  );
}

export const number = new Intl.NumberFormat("en");
