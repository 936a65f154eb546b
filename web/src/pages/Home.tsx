// "/" with a session: makes sure the person's workspace exists and runs (useWorkspace:
// EnsureWorkspace, then WakeWorkspace if it sleeps, then GetWorkspace every second until it
// runs), links to the agent's own web UI (`/w/<id>/`, a full navigation) and to every page of
// the workspace: Files, Terminal, Keys, Previews and Schedules.
import { useEffect, useState } from "preact/hooks";
import { api, messageOf, type GetUserResponse, type Session, type WorkspaceResponse } from "../api";
import { Link, navigate } from "../router";
import { ErrorMessage, Page } from "../ui";
import { agentHref, describe, useWorkspace } from "../workspace";

/** The workspace's pages, each with what it is for. */
const PLACES = [
  { href: "/files", label: "Files", text: "Upload, download and organise your files; clone a git repository." },
  { href: "/terminal", label: "Terminal", text: "A shell in your workspace, with Python, Node.js and git." },
  { href: "/keys", label: "Keys", text: "Add your own API keys for models, web search, chat apps and GitHub." },
  { href: "/previews", label: "Previews", text: "Open the web servers running in your workspace." },
  { href: "/schedules", label: "Schedules", text: "The agent's scheduled jobs and how their runs went." },
];

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
  // The agent's address works while the workspace runs, starts or sleeps (the edge wakes it).
  const reachable =
    workspace?.state === "WORKSPACE_STATE_RUNNING" ||
    workspace?.state === "WORKSPACE_STATE_SLEEPING" ||
    workspace?.state === "WORKSPACE_STATE_PROVISIONING";

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
        {workspace?.workspaceId && reachable && (
          <ul class="links">
            <li>
              {/* A full navigation: the edge serves the agent's own web UI there (and wakes a
                  sleeping workspace first); a profile without one answers "not found". */}
              <a class="button button--primary" href={agentHref(workspace.workspaceId)} data-testid="open-agent">
                Open the agent
              </a>
            </li>
          </ul>
        )}
      </section>

      <nav class="card" aria-labelledby="places-heading">
        <h2 id="places-heading">In your workspace</h2>
        <ul class="places">
          {PLACES.map(({ href, label: name, text }) => (
            <li key={href}>
              <Link class="place" href={href}>
                <span class="place__name">{name}</span>
                <span class="place__text">{text}</span>
              </Link>
            </li>
          ))}
        </ul>
      </nav>
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
