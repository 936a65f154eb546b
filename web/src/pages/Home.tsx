// "/" with a session: makes sure the person's workspace exists and runs (useWorkspace:
// EnsureWorkspace, then WakeWorkspace if it sleeps, then GetWorkspace every second until it
// runs), and links to it.
import { useEffect, useState } from "preact/hooks";
import { api, messageOf, type GetUserResponse, type Session, type WorkspaceResponse } from "../api";
import { Link, navigate } from "../router";
import { ErrorMessage, Page } from "../ui";
import { describe, useWorkspace } from "../workspace";

export function HomePage({ session }: { session: Session }) {
  const [attempt, setAttempt] = useState(0);
  const { workspace, waking, error: progressError, stopped, setWaking } = useWorkspace(attempt);
  const [restartError, setRestartError] = useState("");
  const error = restartError || progressError;

  const restart = async () => {
    if (!workspace?.workspaceId) return;
    setRestartError("");
    try {
      await api<WorkspaceResponse>("/api/v1/provisioner/RestartWorkspace", {
        body: { workspaceId: workspace.workspaceId },
      });
      setWaking(true);
      setAttempt(attempt + 1);
    } catch (failure) {
      setRestartError(messageOf(failure));
    }
  };

  const { label, busy } = describe(workspace, waking, stopped);
  const raw = workspace ? (workspace.state ?? "WORKSPACE_STATE_UNSPECIFIED") : "";
  const running = workspace?.state === "WORKSPACE_STATE_RUNNING";

  return (
    <Page testId="home-page" title="Your workspace" wide>
      <Account session={session} />

      <section class="card" aria-labelledby="workspace-heading">
        <h2 id="workspace-heading">Status</h2>
        <p class="state-line">
          <span class="state-name">State: </span>
          <span data-testid="workspace-state" data-state={raw} role="status" aria-live="polite">
            {label}
          </span>
        </p>
        {busy && !stopped && <progress class="progress" aria-label="Getting your workspace ready" />}
        {workspace?.state === "WORKSPACE_STATE_SUSPENDED" && (
          <p>This workspace is on hold because the account is suspended. Ask an administrator to reinstate it.</p>
        )}
        {workspace?.state === "WORKSPACE_STATE_FAILED" && (
          <p>
            Restarting often fixes this.{" "}
            <button type="button" class="button" onClick={restart}>
              Restart the workspace
            </button>
          </p>
        )}
        <ErrorMessage message={error} />
        {stopped && (
          <button type="button" class="button" onClick={() => {
              setRestartError("");
              setAttempt(attempt + 1);
            }}>
            Try again
          </button>
        )}
        {running && workspace?.workspaceId && (
          <ul class="links">
            <li>
              {/* A full navigation: the edge serves the agent's own web UI there. */}
              <a class="button button--primary" href={`/w/${encodeURIComponent(workspace.workspaceId)}/`}>
                Open the agent
              </a>
            </li>
          </ul>
        )}
      </section>

      <section class="card" aria-labelledby="keys-heading">
        <h2 id="keys-heading">Your keys</h2>
        <p>Add your own API keys for more models, web search, chat apps and GitHub. A saved key is never shown again.</p>
        <Link class="button" href="/keys">
          Manage your keys
        </Link>
      </section>
    </Page>
  );
}

function Account({ session }: { session: Session }) {
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");

  useEffect(() => {
    const controller = new AbortController();
    api<GetUserResponse>("/api/v1/auth/GetUser", { body: {}, signal: controller.signal })
      .then((answer) => setName(answer.user?.email || answer.user?.displayName || ""))
      .catch(() => {
        // Optional: the user id below is shown instead.
      });
    return () => controller.abort();
  }, [session.userId]);

  const signOut = async () => {
    setBusy(true);
    setError("");
    try {
      await api("/auth/signout", { method: "POST" });
      navigate("/", { replace: true });
    } catch (failure) {
      setError(messageOf(failure));
      setBusy(false);
    }
  };

  return (
    <div class="account">
      <p class="account__who">
        Signed in as <strong>{name || session.userId}</strong>
        {session.role === "admin" && (
          <>
            {" "}
            <span class="badge">administrator</span>
          </>
        )}
      </p>
      <button type="button" class="button" onClick={signOut} disabled={busy}>
        {busy ? "Signing out…" : "Sign out"}
      </button>
      <ErrorMessage message={error} />
    </div>
  );
}
