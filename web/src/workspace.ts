// The person's workspace, shared by the pages that need it running (Home, Files, Terminal,
// Previews): ensures it exists (EnsureWorkspace), wakes it if it sleeps (WakeWorkspace), and polls
// it every second (GetWorkspace) until it runs. Transient failures are retried while the page is
// open. Also: the path of the supervisor's routes through the edge, preview addresses, and a
// look-up that finds the workspace without waking it (Schedules).
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, messageOf, type Session, type Workspace, type WorkspaceResponse } from "./api";

const POLL_MS = 1000;

export function provisioner(method: string, body: object, signal: AbortSignal): Promise<Workspace> {
  return api<WorkspaceResponse>(`/api/v1/provisioner/${method}`, { body, signal }).then((answer) => {
    if (!answer.workspace?.workspaceId) {
      throw new ApiError(200, "UNKNOWN", "The server did not describe your workspace. Try again in a moment.");
    }
    return answer.workspace;
  });
}

export function pause(ms: number, signal: AbortSignal): Promise<void> {
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

/** "sandbox_start_failed" → "sandbox start failed" */
function plainReason(reason: string | undefined): string {
  return (reason ?? "").replace(/_/g, " ").trim();
}

/** The workspace's state in words, and whether something is still going on. */
export function describe(workspace: Workspace | undefined, waking: boolean, stopped: boolean): { label: string; busy: boolean } {
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

/** Worth retrying by itself: the server or the network is briefly away. */
export function transient(error: unknown): boolean {
  return error instanceof ApiError && (error.status === 0 || error.status >= 500);
}

export interface WorkspaceProgress {
  /** The last answer; undefined until the first. */
  workspace: Workspace | undefined;
  /** A wake was asked for. */
  waking: boolean;
  /** The last failure's message, "" when the last call succeeded. */
  error: string;
  /** A failure that is not worth retrying stopped the polling (start again with a new attempt). */
  stopped: boolean;
  /** Marks a wake asked for by the page (a restart). */
  setWaking: (waking: boolean) => void;
}

/** Ensures the person's workspace and follows it until it runs; a new `attempt` starts over. */
export function useWorkspace(attempt: number): WorkspaceProgress {
  const [workspace, setWorkspace] = useState<Workspace | undefined>(undefined);
  const [waking, setWaking] = useState(false);
  const [error, setError] = useState("");
  const [stopped, setStopped] = useState(false);

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

  return { workspace, waking, error, stopped, setWaking };
}

/** The supervisor's own routes through the edge (docs/browser-edge.md): `/w/<id>/_tidepool/v1`. */
export function supervisorBase(workspaceId: string): string {
  return `/w/${encodeURIComponent(workspaceId)}/_tidepool/v1`;
}

/** The tool's own web UI through the edge (404 when the profile has none). */
export function agentHref(workspaceId: string): string {
  return `/w/${encodeURIComponent(workspaceId)}/`;
}

// The edge serves previews at <port>-<workspace suffix>.<proxy.preview_domain>, on the
// platform's own scheme and port; GET /auth/session names the domain (previewDomain).

/** The preview address of a port of a workspace, e.g. http://8000-abc….preview.localhost:8080/. */
export function previewUrl(workspaceId: string, port: number, previewDomain: string): string {
  const suffix = workspaceId.replace(/^ws_/, "");
  const { protocol, port: platformPort } = window.location;
  return `${protocol}//${port}-${suffix}.${previewDomain}${platformPort ? `:${platformPort}` : ""}/`;
}

/** tidepool.provisioner.v1.ListWorkspacesResponse (the fields this app reads). */
interface ListWorkspacesResponse {
  workspaces?: Workspace[];
}

/** The person's own workspace without waking it (GET /auth/session, then ListWorkspaces for
 * that owner: an administrator would otherwise see everyone's); undefined when there is none. */
export async function findOwnWorkspace(signal: AbortSignal): Promise<Workspace | undefined> {
  const session = await api<Session>("/auth/session", { signal });
  const answer = await api<ListWorkspacesResponse>("/api/v1/provisioner/ListWorkspaces", {
    body: { ownerUserId: session.userId, page: { pageSize: 10 } },
    signal,
  });
  return (answer.workspaces ?? []).find(
    (workspace) => workspace.workspaceId && workspace.ownerUserId === session.userId && workspace.state !== "WORKSPACE_STATE_DELETED",
  );
}

/** Calls `tick` now and every `everyMs` while the page is shown (a hidden tab asks nothing, so
 * that a forgotten tab does not keep the workspace awake); `key` changes restart it. */
export function usePolling(tick: (signal: AbortSignal) => Promise<void>, everyMs: number, key: unknown[]): void {
  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    let wake: () => void = () => {};
    const onVisible = () => {
      if (!document.hidden) wake();
    };
    document.addEventListener("visibilitychange", onVisible);
    const loop = async () => {
      while (!signal.aborted) {
        if (document.hidden) {
          await new Promise<void>((resolve) => {
            wake = resolve;
            signal.addEventListener("abort", () => resolve(), { once: true });
          });
          continue;
        }
        await tick(signal).catch(() => {});
        await pause(everyMs, signal);
      }
    };
    void loop();
    return () => {
      controller.abort();
      document.removeEventListener("visibilitychange", onVisible);
    };
  }, key);
}
