// Every view keeps its state in the query string, so each URL can be shared or reloaded.
import { useEffect, useState } from "preact/hooks";

export type Query = URLSearchParams;

const listeners = new Set<() => void>();
addEventListener("popstate", () => listeners.forEach((listener) => listener()));

/** The current query string, re-read whenever it changes. */
export function useQuery(): Query {
  const [, setVersion] = useState(0);
  useEffect(() => {
    const listener = () => setVersion((version) => version + 1);
    listeners.add(listener);
    return () => listeners.delete(listener);
  }, []);
  return new URLSearchParams(location.search);
}

/** The URL with `changes` applied to the current query (undefined or "" removes a name). */
export function href(changes: Record<string, string | string[] | undefined>, base?: Query): string {
  const query = new URLSearchParams(base ?? location.search);
  for (const [name, value] of Object.entries(changes)) {
    query.delete(name);
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== "") query.append(name, item);
    }
  }
  const search = query.toString();
  return search ? `/?${search}` : "/";
}

/** Goes to `target` (from `href`) without reloading; `replace` keeps history short. */
export function navigate(target: string, replace = false): void {
  if (target === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", target);
  else history.pushState(null, "", target);
  listeners.forEach((listener) => listener());
}

/** Sets query names: the usual way a form or control changes a view. */
export function update(changes: Record<string, string | string[] | undefined>, replace = false): void {
  navigate(href(changes), replace);
}

/** A click handler for in-app links that keeps modified clicks (new tab) working. */
export function follow(event: MouseEvent): void {
  const anchor = event.currentTarget as HTMLAnchorElement;
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(anchor.getAttribute("href") ?? "/");
}
