// The person's workspace, shared by the pages that need it running (Home, Terminal): ensures it
// exists (EnsureWorkspace), wakes it if it sleeps (WakeWorkspace), and polls it every second
// (GetWorkspace) until it runs. Transient failures are retried while the page is open.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, messageOf, type Workspace, type WorkspaceResponse } from "./api";

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
