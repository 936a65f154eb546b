// "/admin/workspaces": every workspace (ListWorkspaces, 25 at a time, filtered by state and
// owner, the filters kept in the address) with its owner, state, health (as ListWorkspaces and
// GetWorkspace report it), resource use against its limits (GetUsage per row, at most 4 calls at
// once; the CPU load is the server's, cpuMillicores), last activity and why it is awake
// (GetIdleStatus for the rows shown, in one call). Use and idle status refresh every 15 s while
// the page is visible. Stop, restart and delete ask first (delete: by typing the workspace id);
// after an action the row follows the workspace (GetWorkspace every second) until it settles.
import { useEffect, useRef, useState } from "preact/hooks";
import type { TargetedEvent } from "preact";
import { ApiError, messageOf } from "../../api";
import { Link, navigate } from "../../router";
import { ErrorMessage, SelectField } from "../../ui";
import { pause } from "../../workspace";
import { AdminFrame } from "./Frame";
import {
  aborted,
  AdminTable,
  adminApi,
  byteLength,
  ConfirmDialog,
  eachLimited,
  FilterActions,
  ListStatus,
  personName,
  ReasonField,
  Refusal,
  resolvePerson,
  ShowMore,
  showing,
  useDirectory,
  useSearchParams,
  When,
  withQuery,
} from "./common";
import {
  activityLabel,
  formatBytes,
  formatDurationSeconds,
  formatMillicores,
  formatTime,
  healthLabel,
  int,
  keepAwakeLabel,
  parseDuration,
  parseTime,
  plainCode,
  relativeTime,
  WORKSPACE_STATES,
  workspaceStateLabel,
} from "./format";
import type {
  AdminWorkspace,
  AdminWorkspaceResponse,
  GetIdleStatusResponse,
  GetUsageResponse,
  IdleStatus,
  ListWorkspacesResponse,
  WorkspaceUsage,
} from "./types";

const PAGE_SIZE = 25;
const PARALLEL = 4;
const REFRESH_MS = 15_000;
const SETTLE_MS = 90_000;
const STATES = [{ value: "", label: "All but deleted" }, ...WORKSPACE_STATES];
const COLUMNS = ["Owner and workspace", "State", "Health", "CPU", "Memory", "Disk", "Last activity", "Why awake", "Actions"];

type Load =
  | { status: "loading" }
  | { status: "error"; message: string }
  | { status: "ready"; workspaces: AdminWorkspace[]; nextPageToken: string };

interface Details {
  usage?: WorkspaceUsage;
  usageError?: string;
  /** Recent CPU use as the server measured it; undefined when the workspace was not running then. */
  cpuMillicores?: number;
  idle?: IdleStatus;
  idleError?: string;
}

type Action = { kind: "stop" | "restart" | "delete"; workspace: AdminWorkspace };

const live = (workspace: AdminWorkspace) => workspace.state !== "WORKSPACE_STATE_DELETED";

export function WorkspacesPage({ path }: { path: string }) {
  const params = useSearchParams();
  const stateFilter = params.get("state") ?? "";
  const ownerFilter = params.get("owner") ?? "";
  const directory = useDirectory();

  const [draftState, setDraftState] = useState(stateFilter);
  const [draftOwner, setDraftOwner] = useState(ownerFilter);
  const [load, setLoad] = useState<Load>({ status: "loading" });
  const [attempt, setAttempt] = useState(0);
  const [details, setDetails] = useState<Record<string, Details>>({});
  const [updated, setUpdated] = useState<Date | undefined>(undefined);
  const [action, setAction] = useState<Action | null>(null);
  const [busy, setBusy] = useState<Record<string, string>>({});
  const [rowErrors, setRowErrors] = useState<Record<string, string>>({});
  const [notice, setNotice] = useState("");
  const unmounted = useRef(new AbortController());

  useEffect(() => () => unmounted.current.abort(), []);
  useEffect(() => {
    setDraftState(stateFilter);
    setDraftOwner(ownerFilter);
  }, [stateFilter, ownerFilter]);

  // An owner typed as an e-mail address is looked up among the people.
  const ownerId = resolvePerson(ownerFilter, directory);
  const ownerPending = ownerId.pending;

  const request = (pageToken: string) => ({
    states: stateFilter ? [stateFilter] : [],
    ownerUserId: ownerId.id || undefined,
    page: { pageSize: PAGE_SIZE, pageToken: pageToken || undefined },
  });

  useEffect(() => {
    if (ownerPending) return undefined;
    if (ownerId.error) {
      setLoad({ status: "error", message: ownerId.error });
      return undefined;
    }
    const controller = new AbortController();
    setLoad({ status: "loading" });
    adminApi<ListWorkspacesResponse>("provisioner", "ListWorkspaces", request(""), controller.signal)
      .then((answer) => {
        setLoad({ status: "ready", workspaces: answer.workspaces ?? [], nextPageToken: answer.page?.nextPageToken ?? "" });
      })
      .catch((error: unknown) => {
        if (!aborted(error)) setLoad({ status: "error", message: messageOf(error) });
      });
    return () => controller.abort();
  }, [stateFilter, ownerId.id, ownerId.error, ownerPending, attempt]);

  // Use and idle status of the rows shown: now, and every REFRESH_MS while the page is visible.
  const shownIds = load.status === "ready" ? load.workspaces.filter(live).map((w) => w.workspaceId ?? "") : [];
  const shownKey = shownIds.join(",");
  useEffect(() => {
    if (shownIds.length === 0) return undefined;
    const controller = new AbortController();
    const { signal } = controller;
    const refresh = async () => {
      await Promise.all([fetchIdle(shownIds, signal), fetchUsage(shownIds, signal)]);
      if (!signal.aborted) setUpdated(new Date());
    };
    void refresh();
    const timer = window.setInterval(() => {
      if (document.visibilityState === "visible") void refresh();
    }, REFRESH_MS);
    return () => {
      window.clearInterval(timer);
      controller.abort();
    };
  }, [shownKey]);

  const merge = (id: string, change: Partial<Details>) =>
    setDetails((previous) => ({ ...previous, [id]: { ...previous[id], ...change } }));

  async function fetchIdle(ids: string[], signal: AbortSignal): Promise<void> {
    try {
      const answer = await adminApi<GetIdleStatusResponse>(
        "scaler",
        "GetIdleStatus",
        { workspaceIds: ids, page: { pageSize: ids.length } },
        signal,
      );
      const byId = new Map((answer.statuses ?? []).map((s) => [s.workspaceId ?? "", s]));
      setDetails((previous) => {
        const next = { ...previous };
        for (const id of ids) next[id] = { ...next[id], idle: byId.get(id), idleError: "" };
        return next;
      });
    } catch (error) {
      if (aborted(error) || signal.aborted) return;
      // One bad row (deleted meanwhile, say) fails the whole batch: ask row by row.
      await eachLimited(ids, PARALLEL, async (id) => {
        try {
          const one = await adminApi<GetIdleStatusResponse>("scaler", "GetIdleStatus", { workspaceIds: [id] }, signal);
          merge(id, { idle: one.statuses?.[0], idleError: "" });
        } catch (failure) {
          if (!aborted(failure)) merge(id, { idleError: messageOf(failure) });
        }
      });
    }
  }

  async function fetchUsage(ids: string[], signal: AbortSignal): Promise<void> {
    await eachLimited(ids, PARALLEL, async (id) => {
      if (signal.aborted) return;
      try {
        const answer = await adminApi<GetUsageResponse>("provisioner", "GetUsage", { workspaceId: id }, signal);
        const usage = answer.usage ?? {};
        // An idle workspace's 0 is left out of the answer, like every zero in protobuf JSON.
        const cpuMillicores = answer.state === "WORKSPACE_STATE_RUNNING" ? int(usage.cpuMillicores) : undefined;
        merge(id, { usage, cpuMillicores, usageError: "" });
      } catch (failure) {
        if (!aborted(failure)) merge(id, { usageError: messageOf(failure) });
      }
    });
  }

  const replaceRow = (workspace: AdminWorkspace | undefined) => {
    if (!workspace?.workspaceId) return;
    setLoad((previous) =>
      previous.status === "ready"
        ? { ...previous, workspaces: previous.workspaces.map((w) => (w.workspaceId === workspace.workspaceId ? workspace : w)) }
        : previous,
    );
  };

  /** Follows a workspace after an action until it stops changing (or SETTLE_MS pass). */
  const follow = async (workspace: AdminWorkspace | undefined) => {
    const id = workspace?.workspaceId;
    if (!id) return;
    replaceRow(workspace);
    const { signal } = unmounted.current;
    const deadline = Date.now() + SETTLE_MS;
    let current = workspace;
    const settled = (w: AdminWorkspace) =>
      w.state !== "WORKSPACE_STATE_PROVISIONING" && (!w.desiredState || w.desiredState === w.state || w.state === "WORKSPACE_STATE_FAILED");
    while (!settled(current) && Date.now() < deadline && !signal.aborted) {
      await pause(1000, signal);
      if (signal.aborted) return;
      try {
        current = (await adminApi<AdminWorkspaceResponse>("provisioner", "GetWorkspace", { workspaceId: id }, signal)).workspace ?? current;
        replaceRow(current);
      } catch (failure) {
        // A deleted workspace may no longer be found at all.
        if (failure instanceof ApiError && failure.code === "NOT_FOUND") {
          current = { ...current, state: "WORKSPACE_STATE_DELETED", desiredState: "WORKSPACE_STATE_DELETED" };
          replaceRow(current);
        }
        break;
      }
    }
    if (!signal.aborted && live(current)) await Promise.all([fetchIdle([id], signal), fetchUsage([id], signal)]);
  };

  const wake = async (workspace: AdminWorkspace) => {
    const id = workspace.workspaceId ?? "";
    setNotice("");
    setRowErrors((previous) => ({ ...previous, [id]: "" }));
    setBusy((previous) => ({ ...previous, [id]: "Waking…" }));
    try {
      const answer = await adminApi<AdminWorkspaceResponse>("provisioner", "WakeWorkspace", {
        workspaceId: id,
        reason: "admin_request",
      });
      setNotice(`Waking the workspace of ${personName(directory, workspace.ownerUserId)}.`);
      await follow(answer.workspace);
    } catch (failure) {
      setRowErrors((previous) => ({ ...previous, [id]: `The workspace was not woken. ${messageOf(failure)}` }));
    } finally {
      setBusy((previous) => ({ ...previous, [id]: "" }));
    }
  };

  const apply = (event: TargetedEvent<HTMLFormElement, Event>) => {
    event.preventDefault();
    setNotice("");
    const next = withQuery(path, { state: draftState, owner: draftOwner.trim() });
    if (next === `${path}${window.location.search}`) setAttempt(attempt + 1);
    else navigate(next);
  };

  const showMore = async () => {
    if (load.status !== "ready" || !load.nextPageToken) return;
    const answer = await adminApi<ListWorkspacesResponse>("provisioner", "ListWorkspaces", request(load.nextPageToken));
    setLoad({
      status: "ready",
      workspaces: [...load.workspaces, ...(answer.workspaces ?? [])],
      nextPageToken: answer.page?.nextPageToken ?? "",
    });
  };

  const filtered = Boolean(stateFilter || ownerFilter);
  const count =
    load.status !== "ready"
      ? ""
      : load.workspaces.length === 0
        ? filtered
          ? "No workspace matches these filters."
          : "There are no workspaces yet. Each person gets one when they first sign in."
        : showing(load.workspaces.length, ["workspace", "workspaces"], Boolean(load.nextPageToken));

  return (
    <AdminFrame path={path} testId="admin-workspaces-page" title="Workspaces">
      <form class="admin-filters" role="search" aria-label="Filter workspaces" onSubmit={apply}>
        <SelectField id="workspace-state" label="State" value={draftState} options={STATES} onValue={setDraftState} />
        <div class="field admin-filters__wide">
          <label for="workspace-owner">Owner</label>
          <input
            id="workspace-owner"
            type="text"
            value={draftOwner}
            autocomplete="off"
            spellcheck={false}
            aria-describedby="workspace-owner-hint"
            onInput={(event) => setDraftOwner(event.currentTarget.value)}
          />
          <p class="hint" id="workspace-owner-hint">
            Their e-mail address or user id. Empty shows everyone's.
          </p>
        </div>
        <FilterActions label="Show" path={path} filtered={filtered}>
          <button type="button" class="button" onClick={() => setAttempt(attempt + 1)}>
            Refresh
          </button>
        </FilterActions>
      </form>

      <p class="notice" role="status" data-testid="workspaces-notice">
        {notice}
      </p>
      <ListStatus
        load={load}
        pending={ownerPending}
        loadingText="Loading the workspaces…"
        failureText="The workspaces could not be listed."
        onRetry={() => setAttempt(attempt + 1)}
        count={
          count && updated && load.status === "ready" && load.workspaces.length > 0
            ? `${count} Use measured at ${formatTime(updated, true)}.`
            : count
        }
        countTestId="workspaces-count"
      />

      {load.status === "ready" && load.workspaces.length > 0 && (
        <AdminTable name="workspaces" caption="Workspaces, with their use and why they are awake" columns={COLUMNS}>
          {load.workspaces.map((workspace) => (
            <WorkspaceRow
              key={workspace.workspaceId}
              workspace={workspace}
              owner={personName(directory, workspace.ownerUserId)}
              details={details[workspace.workspaceId ?? ""] ?? {}}
              busy={busy[workspace.workspaceId ?? ""] ?? ""}
              error={rowErrors[workspace.workspaceId ?? ""] ?? ""}
              onWake={() => wake(workspace)}
              onAction={(kind) => {
                setNotice("");
                setAction({ kind, workspace });
              }}
            />
          ))}
        </AdminTable>
      )}
      {load.status === "ready" && load.nextPageToken && <ShowMore label="Show more workspaces" onMore={showMore} />}

      {action && (
        <WorkspaceDialog
          action={action}
          owner={personName(directory, action.workspace.ownerUserId)}
          onClose={() => setAction(null)}
          onDone={(message, workspace) => {
            setNotice(message);
            void follow(workspace);
          }}
        />
      )}
    </AdminFrame>
  );
}

/** A thin bar under a figure; the figure itself says the same in words. */
function Bar({ share }: { share: number | undefined }) {
  if (share === undefined || !Number.isFinite(share)) return null;
  const percent = Math.max(0, Math.min(100, share * 100));
  const level = percent >= 90 ? " bar--high" : percent >= 70 ? " bar--mid" : "";
  return (
    <span class={`bar${level}`} aria-hidden="true">
      <span class="bar__fill" style={{ width: `${percent.toFixed(1)}%` }} />
    </span>
  );
}

/** "120 MiB of 2 GiB" (or "120 MiB, no limit") with a bar. */
function Amount({ used, limit, testId }: { used: number; limit: number; testId: string }) {
  return (
    <span class="amount" data-testid={testId}>
      <span>
        {formatBytes(used)}
        {limit > 0 ? ` of ${formatBytes(limit)}` : ", no limit"}
      </span>
      <Bar share={limit > 0 ? used / limit : undefined} />
    </span>
  );
}

interface WorkspaceRowProps {
  workspace: AdminWorkspace;
  owner: string;
  details: Details;
  busy: string;
  error: string;
  onWake: () => void;
  onAction: (kind: Action["kind"]) => void;
}

function WorkspaceRow({ workspace, owner, details, busy, error, onWake, onAction }: WorkspaceRowProps) {
  const id = workspace.workspaceId ?? "";
  const state = workspace.state;
  const running = state === "WORKSPACE_STATE_RUNNING";
  const deleted = state === "WORKSPACE_STATE_DELETED";
  const changing = Boolean(workspace.desiredState && workspace.desiredState !== state && state !== "WORKSPACE_STATE_FAILED");
  const { usage, idle } = details;
  const cpuSeconds = parseDuration(usage?.cpuTime);
  const cpuLimit = int(usage?.cpuLimitMillicores);
  const reason = plainCode(workspace.stateReason);

  return (
    <tr data-testid="workspace-row" data-workspace-id={id} data-owner={owner} data-state={state}>
      <th scope="row" class="admin-table__main">
        <Link class="admin-strong" href={withQuery("/admin/users", { q: owner.includes("@") ? owner : workspace.ownerUserId ?? "" })}>
          {owner}
        </Link>
        <span class="admin-sub admin-mono">{id}</span>
        {(workspace.profile || workspace.runtime) && (
          <span class="admin-sub">{[workspace.profile, workspace.runtime].filter(Boolean).join(" · ")}</span>
        )}
      </th>
      <td>
        <span class={`status-pill ${stateClass(state)}`} data-testid="workspace-state">
          {workspaceStateLabel(state)}
        </span>
        {changing && <span class="admin-sub">Going to: {workspaceStateLabel(workspace.desiredState).toLowerCase()}</span>}
        {reason && <span class="admin-sub">Why: {reason}</span>}
      </td>
      <td data-testid="workspace-health">
        {running ? healthLabel(workspace.health) || <span class="muted">Not reported</span> : <span class="muted">—</span>}
      </td>
      <td data-testid="workspace-cpu">
        {deleted ? (
          <span class="muted">—</span>
        ) : usage ? (
          <span class="amount">
            <span>
              {running
                ? details.cpuMillicores !== undefined
                  ? `${formatMillicores(details.cpuMillicores)}${cpuLimit > 0 ? ` of ${formatMillicores(cpuLimit)}` : ""}`
                  : "Measuring…"
                : "Not running"}
            </span>
            {running && details.cpuMillicores !== undefined && cpuLimit > 0 && <Bar share={details.cpuMillicores / cpuLimit} />}
            {cpuSeconds !== undefined && running && (
              <span class="admin-sub">CPU time {formatDurationSeconds(cpuSeconds)}</span>
            )}
          </span>
        ) : (
          <UsageMissing error={details.usageError} />
        )}
      </td>
      <td>
        {deleted ? (
          <span class="muted">—</span>
        ) : usage ? (
          running ? (
            <Amount used={int(usage.memoryBytes)} limit={int(usage.memoryLimitBytes)} testId="workspace-memory" />
          ) : (
            <span data-testid="workspace-memory">Not running</span>
          )
        ) : (
          <UsageMissing error={details.usageError} />
        )}
      </td>
      <td>
        {deleted ? (
          <span class="muted">Removed</span>
        ) : usage ? (
          <Amount used={int(usage.diskUsedBytes)} limit={int(usage.diskQuotaBytes)} testId="workspace-disk" />
        ) : (
          <UsageMissing error={details.usageError} />
        )}
      </td>
      <td>
        {idle?.lastActivityTime ? (
          <>
            <When time={idle.lastActivityTime} />
            {activityLabel(idle.lastActivitySource) && <span class="admin-sub">{activityLabel(idle.lastActivitySource)}</span>}
          </>
        ) : deleted ? (
          <span class="muted">—</span>
        ) : idle ? (
          <span class="muted">None yet</span>
        ) : (
          <UsageMissing error={details.idleError} />
        )}
      </td>
      <td data-testid="workspace-awake">
        <WhyAwake workspace={workspace} idle={idle} error={details.idleError} />
      </td>
      <td>
        <div class="admin-actions">
          {busy && (
            <span class="muted" role="status">
              {busy}
            </span>
          )}
          {!deleted && (state === "WORKSPACE_STATE_SLEEPING" || state === "WORKSPACE_STATE_FAILED") && (
            <button type="button" class="button button--small" onClick={onWake} disabled={Boolean(busy)}>
              Wake<span class="visually-hidden"> the workspace of {owner}</span>
            </button>
          )}
          {running && (
            <button type="button" class="button button--small" onClick={() => onAction("stop")} disabled={Boolean(busy)}>
              Stop<span class="visually-hidden"> the workspace of {owner}</span>
            </button>
          )}
          {(running || state === "WORKSPACE_STATE_FAILED") && (
            <button type="button" class="button button--small" onClick={() => onAction("restart")} disabled={Boolean(busy)}>
              Restart<span class="visually-hidden"> the workspace of {owner}</span>
            </button>
          )}
          {!deleted && (
            <button
              type="button"
              class="button button--small button--danger"
              onClick={() => onAction("delete")}
              disabled={Boolean(busy)}
            >
              Delete<span class="visually-hidden"> the workspace of {owner}</span>
            </button>
          )}
          {deleted && <span class="muted">Deleted</span>}
        </div>
        <ErrorMessage message={error} />
      </td>
    </tr>
  );
}

function stateClass(state: string | undefined): string {
  switch (state) {
    case "WORKSPACE_STATE_RUNNING":
      return "status-pill--good";
    case "WORKSPACE_STATE_FAILED":
    case "WORKSPACE_STATE_SUSPENDED":
      return "status-pill--bad";
    default:
      return "status-pill--neutral";
  }
}

function UsageMissing({ error }: { error: string | undefined }) {
  if (error) return <span class="admin-warn">Not available: {error}</span>;
  return <span class="muted">Loading…</span>;
}

/** What keeps a running workspace awake and when it sleeps, or when a sleeping one wakes. */
function WhyAwake({ workspace, idle, error }: { workspace: AdminWorkspace; idle: IdleStatus | undefined; error: string | undefined }) {
  const state = workspace.state;
  if (state === "WORKSPACE_STATE_DELETED") return <span class="muted">—</span>;
  if (state === "WORKSPACE_STATE_SUSPENDED") return <span>On hold: the owner is suspended</span>;
  if (!idle) return <UsageMissing error={error} />;
  const sleep = parseTime(idle.sleepTime);
  const nextWake = parseTime(idle.nextScheduledWakeTime);
  const pinUntil = parseTime(idle.pinExpireTime);
  const timeout = parseDuration(idle.idleTimeout);
  if (state !== "WORKSPACE_STATE_RUNNING") {
    return (
      <span>
        {state === "WORKSPACE_STATE_SLEEPING" ? "Asleep" : "Not running"}
        {nextWake && <span class="admin-sub">Wakes {relativeTime(nextWake)} for a scheduled task</span>}
      </span>
    );
  }
  const reasons = (idle.keepAwakeReasons ?? []).filter((r) => r !== "KEEP_AWAKE_REASON_PINNED" || !idle.pinned);
  return (
    <span>
      {idle.pinned && <span class="admin-line">Pinned awake{pinUntil ? ` until ${formatTime(pinUntil)}` : ""}</span>}
      {reasons.length > 0 ? (
        <ul class="admin-reasons">
          {reasons.map((reason) => (
            <li key={reason}>{keepAwakeLabel(reason)}</li>
          ))}
        </ul>
      ) : (
        !idle.pinned && <span class="admin-line">Nothing keeps it awake</span>
      )}
      {sleep ? (
        <span class="admin-sub">Sleeps {relativeTime(sleep)} if unused</span>
      ) : (
        !idle.pinned && timeout !== undefined && <span class="admin-sub">Sleeps after {formatDurationSeconds(timeout)} unused</span>
      )}
    </span>
  );
}

interface WorkspaceDialogProps {
  action: Action;
  owner: string;
  onClose: () => void;
  onDone: (message: string, workspace: AdminWorkspace | undefined) => void;
}

function WorkspaceDialog({ action, owner, onClose, onDone }: WorkspaceDialogProps) {
  const id = action.workspace.workspaceId ?? "";
  const [typed, setTyped] = useState("");
  const [reason, setReason] = useState("");

  if (action.kind === "stop" || action.kind === "restart") {
    const stop = action.kind === "stop";
    return (
      <ConfirmDialog
        title={stop ? `Stop the workspace of ${owner}?` : `Restart the workspace of ${owner}?`}
        confirmLabel={stop ? "Stop" : "Restart"}
        busyLabel={stop ? "Stopping…" : "Restarting…"}
        focusCancel
        testId={`${action.kind}-dialog`}
        onClose={onClose}
        onConfirm={async () => {
          const answer = await adminApi<AdminWorkspaceResponse>("provisioner", stop ? "StopWorkspace" : "RestartWorkspace", {
            workspaceId: id,
            reason: "admin_request",
          });
          onDone(stop ? `Stopping the workspace of ${owner}.` : `Restarting the workspace of ${owner}.`, answer.workspace);
        }}
      >
        <p>
          {stop
            ? "Its agent and any open terminal stop now; every file is kept. It wakes again when its owner next uses it."
            : "Its agent and any open terminal restart with a freshly written configuration; every file is kept."}
        </p>
      </ConfirmDialog>
    );
  }

  return (
    <ConfirmDialog
      title={`Delete the workspace of ${owner}?`}
      confirmLabel="Delete for good"
      busyLabel="Deleting…"
      danger
      testId="delete-dialog"
      onClose={onClose}
      onConfirm={async () => {
        if (typed.trim() !== id) throw new Refusal(`Type the workspace id, ${id}, exactly to confirm.`);
        const trimmed = reason.trim();
        if (byteLength(trimmed) > 256) throw new Refusal("The reason is too long: shorten it.");
        const answer = await adminApi<AdminWorkspaceResponse>("provisioner", "DeleteWorkspace", {
          workspaceId: id,
          confirmWorkspaceId: typed.trim(),
          reason: trimmed || undefined,
        });
        // The server may answer without the workspace: the row then follows it by id.
        onDone(
          `The workspace of ${owner} is being deleted.`,
          answer.workspace?.workspaceId ? answer.workspace : { ...action.workspace, desiredState: "WORKSPACE_STATE_DELETED" },
        );
      }}
    >
      <p class="dialog__warning">
        This cannot be undone. Every file in the workspace, its agent's memory, settings and conversations are removed.
      </p>
      <div class="field">
        <label for="delete-confirm">Type the workspace id to confirm</label>
        <p class="hint" id="delete-confirm-hint">
          <span class="admin-mono">{id}</span>
        </p>
        <input
          id="delete-confirm"
          type="text"
          value={typed}
          autocomplete="off"
          spellcheck={false}
          aria-describedby="delete-confirm-hint"
          onInput={(event) => setTyped(event.currentTarget.value)}
        />
      </div>
      <ReasonField id="delete-reason" label="Reason (optional)" hint="Kept in the audit trail." value={reason} onValue={setReason} />
    </ConfirmDialog>
  );
}
