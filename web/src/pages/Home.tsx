// "/" with a session: makes sure the person's workspace exists and runs (EnsureWorkspace, then
// WakeWorkspace if it sleeps, then GetWorkspace every second until it runs), and links to it.
import { useEffect, useState } from "preact/hooks";
import {
  api,
  ApiError,
  messageOf,
  type GetUserResponse,
  type Session,
  type Workspace,
  type WorkspaceResponse,
} from "../api";
import { Link, navigate } from "../router";
import { ErrorMessage, Page } from "../ui";

const POLL_MS = 1000;

function provisioner(method: string, body: object, signal: AbortSignal): Promise<Workspace> {
  return api<WorkspaceResponse>(`/api/v1/provisioner/${method}`, { body, signal }).then((answer) => {
    if (!answer.workspace?.workspaceId) {
      throw new ApiError(200, "UNKNOWN", "The server did not describe your workspace. Try again in a moment.");
    }
    return answer.workspace;
  });
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      window.clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = window.setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/** Worth retrying by itself: the server or the network is briefly away. */
function transient(error: unknown): boolean {
  return error instanceof ApiError && (error.status === 0 || error.status >= 500);
}

/** "sandbox_start_failed" → "sandbox start failed" */
function plainReason(reason: string | undefined): string {
  return (reason ?? "").replace(/_/g, " ").trim();
}

function describe(workspace: Workspace | undefined, waking: boolean, stopped: boolean): { label: string; busy: boolean } {
  switch (workspace?.state) {
    case undefined:
      if (workspace) return { label: "Unknown", busy: true };
      return stopped ? { label: "Not available", busy: false } : { label: "Checking your workspace…", busy: true };
    case "WORKSPACE_STATE_PROVISIONING":
      return { label: waking ? "Waking up…" : "Starting…", busy: true };
    case "WORKSPACE_STATE_SLEEPING":
      return waking ? { label: "Waking up…", busy: true } : { label: "Asleep", busy: false };
    case "WORKSPACE_STATE_RUNNING":
      return { label: "Running", busy: false };
    case "WORKSPACE_STATE_FAILED": {
      const reason = plainReason(workspace.stateReason);
      return { label: reason ? `Failed: ${reason}` : "Failed", busy: false };
    }
    case "WORKSPACE_STATE_SUSPENDED":
      return { label: "Suspended", busy: false };
    case "WORKSPACE_STATE_DELETED":
      return { label: "Deleted", busy: false };
    default:
      return { label: "Unknown", busy: true };
  }
}

export function HomePage({ session }: { session: Session }) {
  const [workspace, setWorkspace] = useState<Workspace | undefined>(undefined);
  const [waking, setWaking] = useState(false);
  const [error, setError] = useState("");
  const [stopped, setStopped] = useState(false);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    const step = async (request: () => Promise<Workspace>): Promise<Workspace | undefined> => {
      // One call; transient failures are retried every second while the page is open.
      for (;;) {
        try {
          const answer = await request();
          if (!signal.aborted) setError("");
          return answer;
        } catch (failure) {
          if (signal.aborted) return undefined;
          setError(messageOf(failure));
          if (!transient(failure)) {
            setStopped(true);
            return undefined;
          }
          await pause(POLL_MS, signal);
          if (signal.aborted) return undefined;
        }
      }
    };

    const run = async () => {
      setStopped(false);
      let current = await step(() => provisioner("EnsureWorkspace", {}, signal));
      let wokenAt = 0;
      while (current && !signal.aborted) {
        setWorkspace(current);
        if (current.state === "WORKSPACE_STATE_RUNNING") return;
        const workspaceId = current.workspaceId;
        // EnsureWorkspace already asks a sleeping workspace to wake; ask again if it still
        // sleeps (at most every 10 s), e.g. after it went back to sleep.
        if (current.state === "WORKSPACE_STATE_SLEEPING" && Date.now() - wokenAt > 10_000) {
          wokenAt = Date.now();
          setWaking(true);
          current = await step(() => provisioner("WakeWorkspace", { workspaceId }, signal));
          continue;
        }
        await pause(POLL_MS, signal);
        if (signal.aborted) return;
        current = await step(() => provisioner("GetWorkspace", { workspaceId }, signal));
      }
    };
    void run();
    return () => controller.abort();
  }, [attempt]);

  const restart = async () => {
    if (!workspace?.workspaceId) return;
    setError("");
    try {
      await api<WorkspaceResponse>("/api/v1/provisioner/RestartWorkspace", {
        body: { workspaceId: workspace.workspaceId },
      });
      setWaking(true);
      setAttempt(attempt + 1);
    } catch (failure) {
      setError(messageOf(failure));
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
          <button type="button" class="button" onClick={() => setAttempt(attempt + 1)}>
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
