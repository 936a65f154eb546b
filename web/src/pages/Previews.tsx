// "/previews" with a session: the TCP ports listening in the person's workspace (the supervisor's
// ListPorts through the edge, `/w/<id>/_tidepool/v1/ListPorts`), each with its preview link,
// `<port>-<workspace>.<preview domain>` (previewUrl in workspace.ts), opened in a new tab. The
// edge lets only the owner through (the preview-auth redirect). The list is read again every
// few seconds while the page is shown, and with the Refresh button.
import { useState } from "preact/hooks";
import { api, messageOf } from "../api";
import { Link } from "../router";
import { ErrorMessage, Page, WorkspaceWait } from "../ui";
import { agentHref, previewUrl, supervisorBase, usePolling, useWorkspace } from "../workspace";

/** tidepool.supervisor.v1.ListeningPort */
interface ListeningPort {
  port?: number;
  address?: string;
  pid?: number;
  processName?: string;
  command?: string;
  tool?: boolean;
}

interface ListPortsResponse {
  ports?: ListeningPort[];
}

const REFRESH_MS = 3000;

/** The edge forwards previews only to ports from 1024 up (docs/browser-edge.md). */
const FIRST_PREVIEW_PORT = 1024;


export function PreviewsPage({ previewDomain }: { previewDomain: string }) {
  const [attempt, setAttempt] = useState(0);
  const { workspace, waking, error: progressError, stopped } = useWorkspace(attempt);
  const workspaceId = workspace?.state === "WORKSPACE_STATE_RUNNING" ? workspace.workspaceId : undefined;
  const [ports, setPorts] = useState<ListeningPort[] | undefined>(undefined);
  const [error, setError] = useState("");
  const [checkedAt, setCheckedAt] = useState<Date | undefined>(undefined);
  const [refresh, setRefresh] = useState(0);
  const [busy, setBusy] = useState(false);

  usePolling(
    async (signal) => {
      if (!workspaceId) return;
      setBusy(true);
      try {
        const answer = await api<ListPortsResponse>(`${supervisorBase(workspaceId)}/ListPorts`, { body: {}, signal });
        if (signal.aborted) return;
        const listed = (answer.ports ?? []).filter((p) => typeof p.port === "number" && p.port > 0);
        // One row per port: a server listening on IPv4 and IPv6 is one preview.
        const seen = new Set<number>();
        setPorts(listed.filter((p) => (seen.has(p.port as number) ? false : (seen.add(p.port as number), true))));
        setCheckedAt(new Date());
        setError("");
      } catch (failure) {
        if (signal.aborted) return;
        setError(`The list of servers could not be read. ${messageOf(failure)}`);
      } finally {
        if (!signal.aborted) setBusy(false);
      }
    },
    REFRESH_MS,
    [workspaceId, refresh],
  );

  return (
    <Page testId="previews-page" title="Previews" wide>
      <p>
        A web server you (or the agent) start in your workspace gets its own preview address. Only you can open it: the
        link asks for your Tidepool sign-in.
      </p>

      {!workspaceId && (
        <WorkspaceWait workspace={workspace} waking={waking} stopped={stopped} onRetry={() => setAttempt(attempt + 1)} />
      )}

      <ErrorMessage message={error || progressError} />

      {workspaceId && (
        <section aria-labelledby="ports-heading">
          <div class="section-head">
            <h2 id="ports-heading">Servers in your workspace</h2>
            <button type="button" class="button button--small" onClick={() => setRefresh(refresh + 1)} aria-busy={busy}>
              Refresh
            </button>
          </div>
          <p class="muted small" data-testid="previews-checked">
            {checkedAt ? `Checked at ${checkedAt.toLocaleTimeString()}, and again every few seconds.` : "Looking for servers…"}
          </p>
          {/* Announced when the number changes, not at every check. */}
          <p class="visually-hidden" role="status">
            {ports === undefined ? "" : ports.length === 1 ? "1 server is running." : `${ports.length} servers are running.`}
          </p>

          {ports !== undefined && ports.length === 0 && (
            <div class="empty" data-testid="previews-empty">
              <p>
                <strong>No server is running yet.</strong> Start one in the <Link href="/terminal">Terminal</Link>, for
                example a simple file server for the current folder:
              </p>
              <pre class="command">
                <code>python3 -m http.server 8000</code>
              </pre>
              <p class="muted">It shows up here within a few seconds. Stop it with Ctrl+C in the terminal.</p>
            </div>
          )}

          {ports !== undefined && ports.length > 0 && (
            <ul class="port-list" data-testid="ports">
              {ports.map((entry) => {
                const port = entry.port as number;
                const name = entry.processName || "Unknown program";
                return (
                  <li key={port} class="port" data-testid="port-row" data-port={port}>
                    <div class="port__head">
                      <h3 class="port__number">Port {port}</h3>
                      {entry.tool && <span class="badge">the agent</span>}
                    </div>
                    <p class="port__process">
                      <span class="muted">Program: </span>
                      {name}
                      {entry.pid ? <span class="muted"> (process {entry.pid})</span> : null}
                    </p>
                    {entry.command && entry.command !== entry.processName && (
                      <p class="port__command">
                        <code>{entry.command}</code>
                      </p>
                    )}
                    {entry.tool ? (
                      <a class="button" href={agentHref(workspaceId)} target="_blank" rel="noopener noreferrer">
                        Open the agent<span class="visually-hidden"> (opens in a new tab)</span>
                      </a>
                    ) : !previewDomain ? (
                      <p class="muted">Previews are turned off on this platform.</p>
                    ) : port < FIRST_PREVIEW_PORT ? (
                      <p class="muted">Ports below {FIRST_PREVIEW_PORT} cannot be previewed. Start the server on 8000 or another higher port.</p>
                    ) : (
                      <p class="port__link">
                        <a
                          class="button button--primary"
                          href={previewUrl(workspaceId, port, previewDomain)}
                          target="_blank"
                          rel="noopener noreferrer"
                          data-testid="preview-link"
                        >
                          Open preview<span class="visually-hidden"> of port {port} (opens in a new tab)</span>
                        </a>
                        <span class="port__url muted">{previewUrl(workspaceId, port, previewDomain)}</span>
                      </p>
                    )}
                  </li>
                );
              })}
            </ul>
          )}
        </section>
      )}
    </Page>
  );
}
