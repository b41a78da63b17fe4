// Keys (admin token): tenants, their API keys, creating and revoking keys, and the audit
// trail (/v1/tenants, /v1/tenants/{tenant_id}/keys, /v1/keys/{key_id}:revoke,
// /v1/audit-events). A new key's secret is shown once, as the server returns it once.
import { useState } from "preact/hooks";
import { call } from "../api";
import { type Query, follow, href } from "../state";
import { formatTime } from "../time";
import { ErrorNote, Panel, useLoad } from "../ui";

interface Tenant {
  tenant_id: string;
  name: string;
  create_time: string;
}

interface ApiKey {
  key_id: string;
  scopes: string[];
  create_time: string;
  revoke_time: string | null;
  expire_time: string | null;
  events_per_second: number;
}

interface AuditEvent {
  audit_id: string;
  actor: string;
  action: string;
  target: string;
  event_time: string;
}

const SCOPES = ["SCOPE_INGEST", "SCOPE_QUERY", "SCOPE_ADMIN"];
const scopeName = (scope: string) => scope.replace("SCOPE_", "").toLowerCase();
const admin = { admin: true };

export function Keys({ query }: { query: Query }) {
  const [version, setVersion] = useState(0);
  const [actionError, setActionError] = useState("");
  const refresh = () => setVersion(version + 1);
  const tenants = useLoad(`tenants${version}`, (signal) => call<{ tenants: Tenant[] }>("/v1/tenants", {}, { ...admin, signal }));
  const tenantId = query.get("tenant") ?? tenants.data?.tenants[0]?.tenant_id ?? "";
  const act = (action: () => Promise<unknown>) => {
    setActionError("");
    action().then(refresh, (error: Error) => setActionError(error.message));
  };
  return (
    <>
      <ErrorNote error={actionError} />
      <div class="split keys">
        <Panel title="Tenants" busy={tenants.loading}>
          <ErrorNote error={tenants.error} />
          <ul class="tenants" data-testid="tenants">
            {tenants.data?.tenants.map((tenant) => (
              <li>
                <a href={href({ tenant: tenant.tenant_id })} onClick={follow} aria-current={tenant.tenant_id === tenantId ? "page" : undefined}>
                  {tenant.name} <small class="mono">{tenant.tenant_id}</small>
                </a>
              </li>
            ))}
          </ul>
          <form
            class="inline"
            onSubmit={(event) => {
              event.preventDefault();
              const input = event.currentTarget.elements.namedItem("name") as HTMLInputElement;
              const name = input.value.trim();
              act(() => call("/v1/tenants", {}, { ...admin, method: "POST", body: { name } }).then(() => (input.value = "")));
            }}
          >
            <label class="field">
              <span>New tenant</span>
              <input name="name" placeholder="acme" autocomplete="off" />
            </label>
            <button type="submit">Create</button>
          </form>
        </Panel>
        {tenantId && <TenantKeys tenantId={tenantId} version={version} act={act} />}
      </div>
      {tenantId && <Audit tenantId={tenantId} version={version} />}
    </>
  );
}

function TenantKeys({ tenantId, version, act }: { tenantId: string; version: number; act: (action: () => Promise<unknown>) => void }) {
  const keys = useLoad(`keys${tenantId}${version}`, (signal) => call<{ api_keys: ApiKey[] }>(`/v1/tenants/${encodeURIComponent(tenantId)}/keys`, {}, { ...admin, signal }));
  const [secret, setSecret] = useState("");
  const [confirming, setConfirming] = useState("");
  return (
    <Panel title="API keys" busy={keys.loading}>
      <ErrorNote error={keys.error} />
      <form
        class="inline"
        onSubmit={(event) => {
          event.preventDefault();
          const form = new FormData(event.currentTarget);
          const scopes = SCOPES.filter((scope) => form.get(scope));
          act(() =>
            call<{ secret: string }>(`/v1/tenants/${encodeURIComponent(tenantId)}/keys`, {}, { ...admin, method: "POST", body: { scopes } }).then((created) =>
              setSecret(created.secret),
            ),
          );
        }}
      >
        {SCOPES.map((scope) => (
          <label class="check">
            <input type="checkbox" name={scope} defaultChecked={scope !== "SCOPE_ADMIN"} /> {scopeName(scope)}
          </label>
        ))}
        <button type="submit" data-testid="create-key">
          Create key
        </button>
      </form>
      {secret && (
        <p class="secret" role="status">
          New key, shown once: <code data-testid="new-secret">{secret}</code>
        </p>
      )}
      <div class="scroll">
        <table data-testid="keys">
          <thead>
            <tr>
              <th scope="col">Key</th>
              <th scope="col">Scopes</th>
              <th scope="col">Created</th>
              <th scope="col">State</th>
              <th scope="col">
                <span class="sr">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {keys.data?.api_keys.map((key) => (
              <tr data-key-id={key.key_id}>
                <td class="mono">{key.key_id}</td>
                <td>{key.scopes.map(scopeName).join(", ")}</td>
                <td class="mono nowrap">{formatTime(key.create_time)}</td>
                <td class="nowrap" data-testid="key-state">{key.revoke_time ? `revoked ${formatTime(key.revoke_time)}` : "active"}</td>
                <td>
                  {!key.revoke_time &&
                    (confirming === key.key_id ? (
                      <button
                        type="button"
                        class="danger"
                        data-testid="confirm-revoke"
                        // Takes the focus from the Revoke button it replaces, for keyboard users.
                        ref={(button) => button?.focus()}
                        onClick={() => act(() => call(`/v1/keys/${encodeURIComponent(key.key_id)}:revoke`, {}, { ...admin, method: "POST", body: {} }))}
                      >
                        Confirm revoke
                      </button>
                    ) : (
                      <button type="button" data-testid="revoke" onClick={() => setConfirming(key.key_id)}>
                        Revoke
                      </button>
                    ))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Panel>
  );
}

function Audit({ tenantId, version }: { tenantId: string; version: number }) {
  const audit = useLoad(`audit${tenantId}${version}`, (signal) => call<{ audit_events: AuditEvent[] }>("/v1/audit-events", { tenant_id: tenantId, page_size: 50 }, { ...admin, signal }));
  return (
    <Panel title="Audit log" busy={audit.loading}>
      <ErrorNote error={audit.error} />
      <div class="scroll">
        <table data-testid="audit">
          <thead>
            <tr>
              <th scope="col">Time (UTC)</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Actor</th>
            </tr>
          </thead>
          <tbody>
            {audit.data?.audit_events.map((entry) => (
              <tr>
                <td class="mono">{formatTime(entry.event_time)}</td>
                <td>{entry.action.replace("AUDIT_ACTION_", "").toLowerCase().replace(/_/g, " ")}</td>
                <td class="mono">{entry.target}</td>
                <td>{entry.actor}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Panel>
  );
}
