// "/admin/audit": the tamper-evident audit trail (Query, newest first, 50 a page) filtered by
// actor, action, person, workspace, outcome and time range (kept in the address, so a filtered
// view can be reloaded or shared with another administrator). "Export" downloads every event
// matching the filters as JSON lines, oldest first like the server's own export, built in the
// browser from Query pages of 1,000. "Verify chain" checks the whole hash chain and its signed
// checkpoints (Verify) and says what it found.
import { useEffect, useState } from "preact/hooks";
import type { TargetedEvent } from "preact";
import { ApiError, messageOf } from "../../api";
import { navigate } from "../../router";
import { ErrorMessage, SelectField } from "../../ui";
import { AdminFrame } from "./Frame";
import {
  aborted,
  AdminTable,
  adminApi,
  FilterActions,
  ListStatus,
  personName,
  resolvePerson,
  useDirectory,
  useSearchParams,
  withQuery,
} from "./common";
import { formatTime, OUTCOMES, outcomeLabel, parseTime, plainCode, verifyFailureLabel } from "./format";
import type { AuditEvent, AuditFilter, Outcome, QueryResponse, User, VerifyResponse } from "./types";

const PAGE_SIZE = 50;
const EXPORT_PAGE_SIZE = 1000;
const EXPORT_MAX_EVENTS = 200_000;
const COLUMNS = ["Time", "Who acted", "Action", "About", "Outcome", "Details"];

/** Action prefixes offered while typing (any other dotted prefix works too). */
const ACTION_SUGGESTIONS = [
  "auth",
  "auth.sign_in",
  "auth.sign_in_failed",
  "admin",
  "admin.user_suspended",
  "admin.invite_created",
  "workspace",
  "workspace.state_changed",
  "secrets",
  "scaler",
  "config",
  "egress",
];

/** Known actions in words; others are shown by their code. */
const ACTIONS: Record<string, string> = {
  "auth.sign_in": "Signed in",
  "auth.sign_in_failed": "Sign-in failed",
  "auth.sign_out": "Signed out",
  "auth.sign_out_everywhere": "Signed out everywhere",
  "auth.setup_completed": "Set a password with the setup link",
  "auth.setup_failed": "Setup link refused",
  "auth.account_created": "Account created",
  "auth.invite_redeem_failed": "Invite code refused",
  "auth.invite_used": "Invite code used",
  "admin.user_suspended": "Suspended a person",
  "admin.user_reinstated": "Reinstated a person",
  "admin.role_changed": "Changed a role",
  "admin.invite_created": "Created an invite",
  "admin.invite_revoked": "Revoked an invite",
  "admin.signing_key_rotated": "Rotated the session signing key",
  "admin.first_admin_created": "First administrator created",
  "workspace.created": "Workspace created",
  "workspace.state_changed": "Workspace changed state",
  "workspace.sandbox_exited": "Workspace sandbox exited",
  "workspace.supervisor_unresponsive": "Workspace stopped answering",
  "config.tamper_detected": "Configuration change detected and reverted",
  "secrets.put": "Saved a key",
  "secrets.delete": "Deleted a key",
  "scaler.sleep": "Put a workspace to sleep",
  "scaler.wake": "Woke a workspace",
  "scaler.keep_awake": "Kept a workspace awake",
  "scaler.pinned": "Pinned a workspace awake",
  "scaler.unpinned": "Unpinned a workspace",
  "scaler.policy_set": "Changed the idle policy",
  "egress.denied": "Blocked a connection out",
};

type Load =
  | { status: "loading" }
  | { status: "error"; message: string }
  | { status: "ready"; events: AuditEvent[]; nextPageToken: string };

type Verification =
  | { status: "idle" }
  | { status: "busy" }
  | { status: "done"; ok: boolean; message: string }
  | { status: "error"; message: string };

/** "2026-03-05T14:00" (a datetime-local value, the browser's time zone) as RFC 3339. */
function localToIso(value: string): string | undefined {
  if (!value) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

const FIELDS = ["actor", "action", "subject", "workspace", "outcome", "from", "to"] as const;
type Field = (typeof FIELDS)[number];
type Filters = Record<Field, string>;

export function AuditPage({ path }: { path: string }) {
  const params = useSearchParams();
  const filters = Object.fromEntries(FIELDS.map((f) => [f, params.get(f) ?? ""])) as Filters;
  const filtersKey = FIELDS.map((f) => filters[f]).join("\u0000");
  const directory = useDirectory();

  const [draft, setDraft] = useState<Filters>(filters);
  const [formError, setFormError] = useState("");
  const [load, setLoad] = useState<Load>({ status: "loading" });
  // The page tokens of the pages before this one, and this one's ("" for the first).
  const [tokens, setTokens] = useState<string[]>([""]);
  const [attempt, setAttempt] = useState(0);
  const [exporting, setExporting] = useState<{ busy: boolean; message: string; error: string }>({
    busy: false,
    message: "",
    error: "",
  });
  const [verification, setVerification] = useState<Verification>({ status: "idle" });

  useEffect(() => {
    setDraft(filters);
    setTokens([""]);
  }, [filtersKey]);

  const actor = resolvePerson(filters.actor, directory);
  const subject = resolvePerson(filters.subject, directory);
  const pending = actor.pending || subject.pending;
  const filterError = actor.error || subject.error;
  const filter: AuditFilter = {
    actorId: actor.id || undefined,
    subjectUserId: subject.id || undefined,
    workspaceId: filters.workspace.trim() || undefined,
    actionPrefix: filters.action.trim().replace(/\.$/, "") || undefined,
    outcome: (filters.outcome as Outcome) || undefined,
    startTime: localToIso(filters.from),
    endTime: localToIso(filters.to),
  };
  const filterJson = JSON.stringify(filter);
  const pageToken = tokens[tokens.length - 1];

  useEffect(() => {
    if (pending) return undefined;
    if (filterError) {
      setLoad({ status: "error", message: filterError });
      return undefined;
    }
    const controller = new AbortController();
    setLoad({ status: "loading" });
    adminApi<QueryResponse>(
      "audit",
      "Query",
      { filter, page: { pageSize: PAGE_SIZE, pageToken: pageToken || undefined } },
      controller.signal,
    )
      .then((answer) => setLoad({ status: "ready", events: answer.events ?? [], nextPageToken: answer.page?.nextPageToken ?? "" }))
      .catch((error: unknown) => {
        if (!aborted(error)) setLoad({ status: "error", message: messageOf(error) });
      });
    return () => controller.abort();
  }, [filterJson, pageToken, pending, filterError, attempt]);

  const apply = (event: TargetedEvent<HTMLFormElement, Event>) => {
    event.preventDefault();
    const from = localToIso(draft.from);
    const to = localToIso(draft.to);
    if (from && to && from >= to) {
      setFormError("“From” must be before “Until”.");
      return;
    }
    if (draft.action.trim() && !/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.?$/.test(draft.action.trim())) {
      setFormError("An action looks like auth or auth.sign_in: lower-case words joined by dots.");
      return;
    }
    setFormError("");
    const next = withQuery(path, Object.fromEntries(FIELDS.map((f) => [f, draft[f].trim()])));
    if (next === `${path}${window.location.search}`) {
      setTokens([""]);
      setAttempt(attempt + 1);
    } else navigate(next);
  };

  const exportAll = async () => {
    if (exporting.busy || pending || filterError) return;
    setExporting({ busy: true, message: "Exporting…", error: "" });
    try {
      const events: AuditEvent[] = [];
      let token = "";
      do {
        const answer = await adminApi<QueryResponse>("audit", "Query", {
          filter,
          page: { pageSize: EXPORT_PAGE_SIZE, pageToken: token || undefined },
        });
        events.push(...(answer.events ?? []));
        token = answer.page?.nextPageToken ?? "";
        if (token) setExporting({ busy: true, message: `Exporting… ${events.length.toLocaleString()} events so far.`, error: "" });
      } while (token && events.length < EXPORT_MAX_EVENTS);
      if (events.length === 0) {
        setExporting({ busy: false, message: "", error: "Nothing to export: no event matches these filters." });
        return;
      }
      // Oldest first, one JSON object per line, like the audit service's own export.
      events.reverse();
      const blob = new Blob(events.map((e) => `${JSON.stringify(e)}\n`), { type: "application/x-ndjson" });
      const stamp = new Date().toISOString().replace(/[:]/g, "").replace(/\.\d+Z$/, "Z");
      const name = `tidepool-audit-${stamp}.jsonl`;
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = name;
      document.body.appendChild(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
      const capped = token ? ` Only the newest ${EXPORT_MAX_EVENTS.toLocaleString()} were exported: narrow the filters for the rest.` : "";
      setExporting({
        busy: false,
        message: `Exported ${events.length.toLocaleString()} ${events.length === 1 ? "event" : "events"} to ${name}.${capped}`,
        error: "",
      });
    } catch (failure) {
      setExporting({ busy: false, message: "", error: `The export stopped. ${messageOf(failure)}` });
    }
  };

  const verify = async () => {
    setVerification({ status: "busy" });
    try {
      const answer = await adminApi<VerifyResponse>("audit", "Verify", { startSequence: "1" });
      const records = Number(answer.verifiedRecordCount ?? 0).toLocaleString();
      const checkpoints = Number(answer.verifiedCheckpointCount ?? 0);
      if (answer.result === "VERIFY_RESULT_OK") {
        setVerification({
          status: "done",
          ok: true,
          message: `The audit trail is intact: ${records} records (${answer.startSequence ?? "1"} to ${
            answer.endSequence ?? "?"
          }) and ${checkpoints.toLocaleString()} signed ${checkpoints === 1 ? "checkpoint" : "checkpoints"} were checked.`,
        });
      } else {
        setVerification({
          status: "done",
          ok: false,
          message: `The audit trail is broken at record ${answer.firstBadSequence ?? "?"}: ${verifyFailureLabel(answer.failure)}.${
            answer.detail ? ` ${answer.detail.charAt(0).toUpperCase()}${answer.detail.slice(1)}` : ""
          }`,
        });
      }
    } catch (failure) {
      if (failure instanceof ApiError && failure.code === "NOT_FOUND") {
        setVerification({ status: "done", ok: true, message: "The audit trail is empty: there is nothing to verify yet." });
      } else {
        setVerification({ status: "error", message: `The chain could not be verified. ${messageOf(failure)}` });
      }
    }
  };

  const set = (field: Field) => (event: TargetedEvent<HTMLInputElement, Event>) =>
    setDraft({ ...draft, [field]: event.currentTarget.value });
  const filtered = FIELDS.some((f) => filters[f]);
  const pageNumber = tokens.length;
  const count =
    load.status !== "ready"
      ? ""
      : load.events.length === 0
        ? filtered
          ? "No event matches these filters."
          : "The audit trail is empty."
        : `Page ${pageNumber}: ${load.events.length} ${load.events.length === 1 ? "event" : "events"}, newest first.`;

  return (
    <AdminFrame path={path} testId="admin-audit-page" title="Audit trail">
      <p class="muted">
        Every sign-in, key change, workspace change, administrator action and security event, in a chain where any edit
        shows. Times are in your time zone.
      </p>
      <form class="admin-filters" role="search" aria-label="Filter the audit trail" onSubmit={apply} noValidate>
        <div class="field">
          <label for="audit-actor">Who acted</label>
          <input id="audit-actor" type="text" value={draft.actor} onInput={set("actor")} autocomplete="off" spellcheck={false} aria-describedby="audit-actor-hint" />
          <p class="hint" id="audit-actor-hint">
            E-mail, user id or service name.
          </p>
        </div>
        <div class="field">
          <label for="audit-action">Action</label>
          <input
            id="audit-action"
            type="text"
            list="audit-actions"
            value={draft.action}
            onInput={set("action")}
            autocomplete="off"
            spellcheck={false}
            aria-describedby="audit-action-hint"
          />
          <datalist id="audit-actions">
            {ACTION_SUGGESTIONS.map((a) => (
              <option key={a} value={a} />
            ))}
          </datalist>
          <p class="hint" id="audit-action-hint">
            “admin” shows every admin.… action.
          </p>
        </div>
        <div class="field">
          <label for="audit-subject">About whom</label>
          <input id="audit-subject" type="text" value={draft.subject} onInput={set("subject")} autocomplete="off" spellcheck={false} aria-describedby="audit-subject-hint" />
          <p class="hint" id="audit-subject-hint">
            E-mail or user id.
          </p>
        </div>
        <div class="field">
          <label for="audit-workspace">Workspace</label>
          <input id="audit-workspace" type="text" value={draft.workspace} onInput={set("workspace")} autocomplete="off" spellcheck={false} aria-describedby="audit-workspace-hint" />
          <p class="hint" id="audit-workspace-hint">
            A workspace id (ws_…).
          </p>
        </div>
        <SelectField
          id="audit-outcome"
          label="Outcome"
          value={draft.outcome}
          options={[{ value: "", label: "Any outcome" }, ...OUTCOMES]}
          onValue={(outcome) => setDraft({ ...draft, outcome })}
        />
        <div class="field">
          <label for="audit-from">From</label>
          <input id="audit-from" type="datetime-local" value={draft.from} onInput={set("from")} />
        </div>
        <div class="field">
          <label for="audit-to">Until</label>
          <input id="audit-to" type="datetime-local" value={draft.to} onInput={set("to")} />
        </div>
        <FilterActions label="Apply filters" path={path} filtered={filtered} />
        {formError && (
          <div class="admin-filters__full">
            <ErrorMessage message={formError} />
          </div>
        )}
      </form>

      <div class="admin-toolbar">
        <button type="button" class="button" onClick={exportAll} disabled={exporting.busy}>
          {exporting.busy ? "Exporting…" : "Export as JSON lines"}
        </button>
        <button type="button" class="button" onClick={verify} disabled={verification.status === "busy"}>
          {verification.status === "busy" ? "Verifying…" : "Verify chain"}
        </button>
      </div>
      <p class="notice" role="status" data-testid="export-status">
        {exporting.busy ? "" : exporting.message}
      </p>
      {exporting.busy && (
        <p class="muted" role="status">
          {exporting.message}
        </p>
      )}
      <ErrorMessage message={exporting.error} />
      <div role="status" data-testid="verify-result">
        {verification.status === "done" && (
          <p class={verification.ok ? "admin-result admin-result--good" : "admin-result admin-result--bad"} data-ok={verification.ok}>
            {verification.message}
          </p>
        )}
      </div>
      {verification.status === "error" && <ErrorMessage message={verification.message} />}

      <ListStatus
        load={load}
        pending={pending}
        loadingText="Loading the audit trail…"
        failureText="The audit trail could not be read."
        onRetry={() => setAttempt(attempt + 1)}
        count={count}
        countTestId="audit-count"
      />
      {load.status === "ready" && load.events.length > 0 && (
        <AdminTable name="audit" caption="Audit events, newest first" columns={COLUMNS}>
          {load.events.map((event) => (
            <EventRow key={event.sequence} event={event} directory={directory} />
          ))}
        </AdminTable>
      )}
      {load.status === "ready" && (pageNumber > 1 || load.nextPageToken) && (
        <nav class="admin-pager" aria-label="Audit pages">
          <button type="button" class="button" disabled={pageNumber <= 1} onClick={() => setTokens(tokens.slice(0, -1))}>
            Newer
          </button>
          <span class="muted">Page {pageNumber}</span>
          <button
            type="button"
            class="button"
            disabled={!load.nextPageToken}
            onClick={() => setTokens([...tokens, load.nextPageToken])}
          >
            Older
          </button>
        </nav>
      )}
    </AdminFrame>
  );
}

function actorText(event: AuditEvent, directory: Map<string, User>): string {
  const id = event.actor?.id ?? "";
  switch (event.actor?.kind) {
    case "ACTOR_KIND_USER":
      return personName(directory, id);
    case "ACTOR_KIND_SERVICE":
      return `Service: ${id}`;
    case "ACTOR_KIND_SYSTEM":
      return `Automatic: ${id}`;
    default:
      return id || "Unknown";
  }
}

function EventRow({ event, directory }: { event: AuditEvent; directory: Map<string, User> }) {
  const time = parseTime(event.serverTime);
  const action = event.action ?? "";
  const outcome = event.outcome;
  const attributes = Object.entries(event.attributes ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const good = outcome === "OUTCOME_SUCCESS";
  return (
    <tr data-testid="audit-row" data-action={action} data-outcome={outcome} data-sequence={event.sequence}>
      <td class="admin-nowrap">
        {time ? <time dateTime={time.toISOString()}>{formatTime(time, true)}</time> : "—"}
        <span class="admin-sub">#{event.sequence}</span>
      </td>
      <td>{actorText(event, directory)}</td>
      <th scope="row" class="admin-table__main">
        <span class="admin-strong">{ACTIONS[action] || plainCode(action.split(".").slice(1).join(".")) || action || "Unknown"}</span>
        <span class="admin-sub admin-mono" data-testid="audit-action">
          {action}
        </span>
      </th>
      <td>
        {event.subjectUserId && <span class="admin-line">{personName(directory, event.subjectUserId)}</span>}
        {event.workspaceId && <span class="admin-line admin-mono">{event.workspaceId}</span>}
        {!event.subjectUserId && !event.workspaceId && <span class="muted">—</span>}
      </td>
      <td>
        <span class={`status-pill ${good ? "status-pill--good" : outcome === "OUTCOME_FAILURE" ? "status-pill--neutral" : "status-pill--bad"}`}>
          {outcomeLabel(outcome)}
        </span>
        {event.reasonCode && <span class="admin-sub">{plainCode(event.reasonCode)}</span>}
      </td>
      <td>
        <details class="admin-details">
          <summary>
            More<span class="visually-hidden"> about event {event.sequence}</span>
          </summary>
          <dl>
            {attributes.map(([key, value]) => (
              <div key={key}>
                <dt>{plainCode(key.replace(/\./g, " "))}</dt>
                <dd>{value}</dd>
              </div>
            ))}
            {event.sourceAddress && (
              <div>
                <dt>From address</dt>
                <dd>{event.sourceAddress}</dd>
              </div>
            )}
            {event.sourceService && (
              <div>
                <dt>Recorded by</dt>
                <dd>{event.sourceService}</dd>
              </div>
            )}
            {event.requestId && (
              <div>
                <dt>Request id</dt>
                <dd class="admin-mono">{event.requestId}</dd>
              </div>
            )}
            <div>
              <dt>Event id</dt>
              <dd class="admin-mono">{event.eventId}</dd>
            </div>
          </dl>
        </details>
      </td>
    </tr>
  );
}
