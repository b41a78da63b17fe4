// The public REST API (the routes in /openapi.yaml), with the credentials kept in
// session storage: an API key with the query scope, and the admin token for Keys.

export type Params = Record<string, string | string[] | number | undefined>;

/** An error answered by the server, carrying its own message. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

const KEY = "eventline.key";
const ADMIN = "eventline.admin";

export interface Credentials {
  key: string;
  admin: string;
}

export function credentials(): Credentials {
  return { key: sessionStorage.getItem(KEY) ?? "", admin: sessionStorage.getItem(ADMIN) ?? "" };
}

export function saveCredentials({ key, admin }: Credentials): void {
  sessionStorage.setItem(KEY, key);
  sessionStorage.setItem(ADMIN, admin);
}

export function forgetCredentials(): void {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(ADMIN);
}

/** `path?params`, leaving out empty values; arrays repeat the parameter. */
export function url(path: string, params: Params = {}): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== "") search.append(name, String(item));
    }
  }
  const query = search.toString();
  return query ? `${path}?${query}` : path;
}

function headers(admin: boolean, given?: Credentials): Record<string, string> {
  const { key, admin: token } = given ?? credentials();
  return admin ? { authorization: `Bearer ${token}` } : { "x-api-key": key };
}

async function failure(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && typeof body.message === "string" && body.message) message = body.message;
  } catch {
    // Not JSON (a proxy's page, say): the status line is all there is.
  }
  return new ApiError(message, response.status);
}

export interface Options {
  admin?: boolean;
  method?: string;
  body?: unknown;
  signal?: AbortSignal;
  credentials?: Credentials;
}

/** Calls one REST route and returns its JSON, or throws an ApiError with the server's message. */
export async function call<T>(path: string, params: Params = {}, options: Options = {}): Promise<T> {
  const init: RequestInit = {
    method: options.method ?? "GET",
    headers: { ...headers(options.admin ?? false, options.credentials), ...(options.body ? { "content-type": "application/json" } : {}) },
    signal: options.signal,
  };
  if (options.body !== undefined) init.body = JSON.stringify(options.body);
  const response = await fetch(url(path, params), init);
  if (!response.ok) throw await failure(response);
  return (await response.json()) as T;
}

export interface EventRecord {
  event_id: string;
  event_type: string;
  user_id: string;
  session_id: string;
  timestamp: string;
  received_at: string;
  properties: Record<string, unknown> | null;
}

export interface TailLine {
  event: EventRecord;
  cursor: string;
}

/**
 * Follows `/v1/events:tail` (newline-delimited JSON) with a fetch stream reader, since
 * EventSource cannot send the API key header. `onOpen` runs once the server answered.
 */
export async function tail(
  params: Params,
  signal: AbortSignal,
  onOpen: () => void,
  onLine: (line: TailLine) => void,
): Promise<void> {
  const response = await fetch(url("/v1/events:tail", params), { headers: headers(false), signal });
  if (!response.ok || !response.body) throw await failure(response);
  onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new ApiError("the server ended the live stream", 0);
    pending += value;
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const text = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (!text.trim()) continue;
      const line = JSON.parse(text);
      if (line.error) throw new ApiError(line.error.message || "the live stream failed", 0);
      onLine(line.result as TailLine);
    }
  }
}
