// The console's shell: sign-in, the navigation between views (`view` in the query
// string) and the view itself.
import { render } from "preact";
import { useState } from "preact/hooks";
import { ApiError, call, credentials, forgetCredentials, saveCredentials } from "./api";
import { type Query, follow, href, useQuery } from "./state";
import { windowOf } from "./time";
import { ErrorNote, EventTypes } from "./ui";
import { Explorer } from "./views/explorer";
import { Funnels } from "./views/funnels";
import { Insights } from "./views/insights";
import { Keys } from "./views/keys";
import { Live } from "./views/live";
import { Retention } from "./views/retention";

const VIEWS: [string, string, (props: { query: Query }) => preact.JSX.Element][] = [
  ["live", "Live", Live],
  ["explorer", "Explorer", Explorer],
  ["insights", "Insights", Insights],
  ["funnels", "Funnels", Funnels],
  ["retention", "Retention", Retention],
  ["keys", "Keys", Keys],
];

function App() {
  const query = useQuery();
  const [signedIn, setSignedIn] = useState(() => credentials().key !== "" || credentials().admin !== "");
  if (!signedIn) return <SignIn onDone={() => setSignedIn(true)} />;
  const { key, admin } = credentials();
  const fallback = key ? "live" : "keys";
  const name = query.get("view") ?? fallback;
  const [, title, View] = VIEWS.find(([id]) => id === name) ?? VIEWS[0];
  const needsAdmin = name === "keys";
  const missing = needsAdmin ? (admin ? "" : "The Keys view needs the admin token: sign out and sign in with it.") : key ? "" : "This view needs an API key with the query scope: sign out and sign in with one.";
  document.title = `${title} · eventline`;
  return (
    <>
      <header class="bar">
        <span class="brand">eventline</span>
        <nav aria-label="Views">
          {VIEWS.map(([id, label]) => (
            <a href={href({ view: id }, new URLSearchParams())} onClick={follow} aria-current={id === name ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <button
          type="button"
          class="quiet"
          onClick={() => {
            forgetCredentials();
            setSignedIn(false);
          }}
        >
          Sign out
        </button>
      </header>
      <main id="main">
        <h1 class="sr">{title}</h1>
        {missing ? <ErrorNote error={missing} /> : <View key={name} query={query} />}
        {key && <EventTypes window={windowOf(query, "30d")} />}
      </main>
    </>
  );
}

function SignIn({ onDone }: { onDone: () => void }) {
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  return (
    <main class="signin">
      <h1>eventline</h1>
      <form
        onSubmit={async (event) => {
          event.preventDefault();
          const form = new FormData(event.currentTarget);
          const given = { key: String(form.get("key") ?? "").trim(), admin: String(form.get("admin") ?? "").trim() };
          if (!given.key && !given.admin) return setError("Enter an API key with the query scope, the admin token, or both.");
          setBusy(true);
          setError("");
          try {
            // Each credential is checked once, so a wrong one is refused here with the server's reason.
            if (given.key) await call("/v1/stats/count", { start_time: new Date(Date.now() - 60_000).toISOString() }, { credentials: given });
            if (given.admin) await call("/v1/tenants", {}, { admin: true, credentials: given });
            saveCredentials(given);
            onDone();
          } catch (failure) {
            setError(failure instanceof ApiError ? failure.message : String(failure));
          } finally {
            setBusy(false);
          }
        }}
      >
        <label class="field">
          <span>API key (query scope)</span>
          <input name="key" type="password" autocomplete="off" data-testid="signin-key" placeholder="elk_…" autofocus />
        </label>
        <label class="field">
          <span>Admin token (optional, for Keys)</span>
          <input name="admin" type="password" autocomplete="off" data-testid="signin-admin" />
        </label>
        <ErrorNote error={error} />
        <button type="submit" data-testid="signin" disabled={busy}>
          Sign in
        </button>
        <p class="hint">Kept in this tab's session storage only. The first start of the server prints a key with the query scope.</p>
      </form>
    </main>
  );
}

const root = document.getElementById("app");
if (root) {
  root.textContent = "";
  render(<App />, root);
}
