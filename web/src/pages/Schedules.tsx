// "/schedules" with a session: the tool's scheduled jobs and how their runs went. The workspace is
// found without waking it (findOwnWorkspace). While it runs, its jobs come from the supervisor's
// GetStatus (`scheduledJobs`: schedule, timezone, next run computed in that timezone); each next
// run is shown in the person's own time and in UTC. The run history comes from the scaler
// (ListJobRuns: on time, late, missed and why), which keeps it while the workspace sleeps; a
// sleeping workspace shows that history and when the scaler will wake it (GetIdleStatus), and
// can be woken to read the jobs themselves. Everything is read again every 10 s while shown.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, browserTimeZone, messageOf, type Workspace } from "../api";
import { Link } from "../router";
import { ErrorMessage, Page } from "../ui";
import { describe, findOwnWorkspace, provisioner, supervisorBase, usePolling, useWorkspace } from "../workspace";

type MissedRunPolicy = "MISSED_RUN_POLICY_UNSPECIFIED" | "MISSED_RUN_POLICY_RUN_ONCE_LATE" | "MISSED_RUN_POLICY_SKIP";

/** tidepool.supervisor.v1.JobRunSummary */
interface JobRunSummary {
  scheduledTime?: string;
  startTime?: string;
  finishTime?: string;
  result?: "JOB_RUN_RESULT_UNSPECIFIED" | "JOB_RUN_RESULT_RUNNING" | "JOB_RUN_RESULT_SUCCEEDED" | "JOB_RUN_RESULT_FAILED";
}

/** tidepool.supervisor.v1.ScheduledJob (the fields this page reads). */
interface ScheduledJob {
  jobId?: string;
  name?: string;
  schedule?: string;
  timezone?: string;
  nextRunTime?: string;
  enabled?: boolean;
  missedRunPolicy?: MissedRunPolicy;
  lastRun?: JobRunSummary;
  scheduleError?: string;
}

interface GetStatusResponse {
  scheduledJobs?: ScheduledJob[];
}

/** tidepool.scaler.v1.JobRun */
interface JobRun {
  jobId?: string;
  jobName?: string;
  scheduledTime?: string;
  timezone?: string;
  startTime?: string;
  outcome?: "JOB_RUN_OUTCOME_UNSPECIFIED" | "JOB_RUN_OUTCOME_ON_TIME" | "JOB_RUN_OUTCOME_LATE" | "JOB_RUN_OUTCOME_MISSED";
  missReason?: string;
  missedRunPolicy?: MissedRunPolicy;
  /** A Duration in protobuf JSON: "312s", "0.5s". */
  lateness?: string;
}

interface ListJobRunsResponse {
  jobRuns?: JobRun[];
}

/** tidepool.scaler.v1.IdleStatus (the fields this page reads). */
interface IdleStatus {
  nextScheduledWakeTime?: string;
}

interface GetIdleStatusResponse {
  statuses?: IdleStatus[];
}

const REFRESH_MS = 10_000;
/** Runs shown per job (the newest). */
const RUNS_SHOWN = 10;

type Lookup =
  | { status: "loading" }
  | { status: "none" }
  | { status: "error"; message: string }
  | { status: "found"; workspace: Workspace };

interface Snapshot {
  /** undefined while the workspace does not run (the jobs cannot be read). */
  jobs: ScheduledJob[] | undefined;
  runs: JobRun[];
  nextWake: string | undefined;
  /** Why the jobs could not be read although the workspace runs; "" otherwise. */
  jobsError: string;
}

// ---- Times

const zone = browserTimeZone();

function parseTime(time: string | undefined): Date | undefined {
  if (!time) return undefined;
  const date = new Date(time);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

const DATE_TIME: Intl.DateTimeFormatOptions = {
  weekday: "short",
  day: "numeric",
  month: "short",
  year: "numeric",
  hour: "2-digit",
  minute: "2-digit",
};

/** Whether a time falls between whole minutes (a job every few seconds). */
function hasSeconds(time: string | undefined): boolean {
  const date = parseTime(time);
  return date !== undefined && date.getUTCSeconds() !== 0;
}

function localTime(date: Date, seconds: boolean): string {
  return new Intl.DateTimeFormat(undefined, seconds ? { ...DATE_TIME, second: "2-digit" } : DATE_TIME).format(date);
}

function utcTime(date: Date, seconds: boolean): string {
  const options: Intl.DateTimeFormatOptions = { ...DATE_TIME, timeZone: "UTC" };
  if (seconds) options.second = "2-digit";
  return `${new Intl.DateTimeFormat(undefined, options).format(date)} UTC`;
}

/** "in 3 hours", "2 minutes ago". */
function relative(date: Date): string {
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const abs = Math.abs(seconds);
  if (abs < 60) return format.format(seconds, "second");
  if (abs < 3600) return format.format(Math.round(seconds / 60), "minute");
  if (abs < 86400 * 2) return format.format(Math.round(seconds / 3600), "hour");
  return format.format(Math.round(seconds / 86400), "day");
}

/** "312s" → "5 min 12 s". */
function duration(value: string | undefined): string {
  const seconds = Math.round(Number.parseFloat((value ?? "").replace(/s$/, "")));
  if (!Number.isFinite(seconds) || seconds <= 0) return "";
  const parts: string[] = [];
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  if (hours) parts.push(`${hours} h`);
  if (minutes) parts.push(`${minutes} min`);
  if (rest && !hours) parts.push(`${rest} s`);
  return parts.join(" ");
}

interface WhenProps {
  time: string | undefined;
  /** Shows UTC beside the person's time. */
  utc?: boolean;
  /** Shows seconds (times of one list show them all or none); by default when the time has them. */
  seconds?: boolean;
  testId?: string;
}

/** A time in the person's zone, with UTC beside it for the next run. */
function When({ time, utc, seconds, testId }: WhenProps) {
  const date = parseTime(time);
  if (!date) return <span class="muted">unknown</span>;
  const withSeconds = seconds ?? hasSeconds(time);
  return (
    <time dateTime={date.toISOString()} data-testid={testId}>
      <span data-testid={testId ? `${testId}-local` : undefined}>{localTime(date, withSeconds)}</span>
      {utc && (
        <>
          {" "}
          <span class="muted">
            (<span data-testid={testId ? `${testId}-utc` : undefined}>{utcTime(date, withSeconds)}</span>)
          </span>
        </>
      )}
    </time>
  );
}

// ---- Words

const WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

function clock(hour: string, minute: string): string {
  return `${hour.padStart(2, "0")}:${minute.padStart(2, "0")}`;
}

/** The schedule in words for the common forms ("Every day at 09:00"); "" when it is not one. */
function scheduleInWords(schedule: string): string {
  const text = schedule.trim();
  const every = /^every\s+((?:\d+[dhms])+)$/i.exec(text);
  if (every) {
    const names: Record<string, [string, string]> = { d: ["day", "days"], h: ["hour", "hours"], m: ["minute", "minutes"], s: ["second", "seconds"] };
    const parts = Array.from(every[1].toLowerCase().matchAll(/(\d+)([dhms])/g), ([, n, unit]) =>
      `${n} ${Number(n) === 1 ? names[unit][0] : names[unit][1]}`,
    );
    return `Every ${parts.join(" ")}`;
  }
  if (/^at\s+/i.test(text)) return "Once";
  const shortcuts: Record<string, string> = {
    "@hourly": "Every hour",
    "@daily": "Every day at 00:00",
    "@midnight": "Every day at 00:00",
    "@weekly": "Every Sunday at 00:00",
    "@monthly": "On the 1st of every month at 00:00",
  };
  if (shortcuts[text.toLowerCase()]) return shortcuts[text.toLowerCase()];
  const fields = text.split(/\s+/);
  if (fields.length !== 5) return "";
  const [minute, hour, day, month, weekday] = fields;
  const number = /^\d{1,2}$/;
  if (/^\*\/\d+$/.test(minute) && hour === "*" && day === "*" && month === "*" && weekday === "*") {
    return `Every ${minute.slice(2)} minutes`;
  }
  if (number.test(minute) && hour === "*" && day === "*" && month === "*" && weekday === "*") {
    return `Every hour at ${minute.padStart(2, "0")} minutes past`;
  }
  if (!number.test(minute) || !number.test(hour) || month !== "*") return "";
  const at = clock(hour, minute);
  if (day === "*" && weekday === "*") return `Every day at ${at}`;
  if (day === "*" && weekday === "1-5") return `Weekdays (Monday to Friday) at ${at}`;
  if (day === "*" && /^[0-7]$/.test(weekday)) return `Every ${WEEKDAYS[Number(weekday) % 7]} at ${at}`;
  if (number.test(day) && weekday === "*") return `On day ${day} of every month at ${at}`;
  return "";
}

function policyInWords(policy: MissedRunPolicy | undefined): string {
  return policy === "MISSED_RUN_POLICY_SKIP"
    ? "A run that was missed is skipped."
    : "A run that was missed is made up once, as soon as possible.";
}

const MISS_REASONS: Record<string, string> = {
  MISS_REASON_PLATFORM_DOWN: "Tidepool itself was down at that time.",
  MISS_REASON_WAKE_FAILED: "Your workspace could not be started in time.",
  MISS_REASON_WORKSPACE_SUSPENDED: "Your account was on hold.",
  MISS_REASON_SKIPPED_BY_POLICY: "Skipped: of several missed runs, only the latest is made up.",
  MISS_REASON_CAPACITY: "Tidepool had no room to start your workspace.",
  MISS_REASON_TOOL_DID_NOT_RUN: "Your workspace was running, but the agent did not start the job.",
};

/** The outcome in words: a short label and, for late and missed runs, why. */
function outcomeInWords(run: JobRun): { label: string; kind: "ok" | "late" | "missed" | "unknown"; detail: string } {
  const why = run.missReason ? MISS_REASONS[run.missReason] ?? "" : "";
  switch (run.outcome) {
    case "JOB_RUN_OUTCOME_ON_TIME":
      return { label: "On time", kind: "ok", detail: why ? `Made up after all. ${why}` : "" };
    case "JOB_RUN_OUTCOME_LATE": {
      const late = duration(run.lateness);
      return { label: late ? `Late by ${late}` : "Late", kind: "late", detail: why };
    }
    case "JOB_RUN_OUTCOME_MISSED":
      return { label: "Missed", kind: "missed", detail: why };
    default:
      return { label: "Unknown", kind: "unknown", detail: "" };
  }
}

function lastRunInWords(run: JobRunSummary | undefined): string {
  switch (run?.result) {
    case "JOB_RUN_RESULT_RUNNING":
      return "running now";
    case "JOB_RUN_RESULT_SUCCEEDED":
      return "succeeded";
    case "JOB_RUN_RESULT_FAILED":
      return "failed";
    default:
      return "";
  }
}

// ---- The page

export function SchedulesPage() {
  const [lookup, setLookup] = useState<Lookup>({ status: "loading" });
  const [attempt, setAttempt] = useState(0);
  const [refresh, setRefresh] = useState(0);
  const [snapshot, setSnapshot] = useState<Snapshot | undefined>(undefined);
  const [error, setError] = useState("");
  const [waking, setWaking] = useState(false);

  useEffect(() => {
    const controller = new AbortController();
    setLookup({ status: "loading" });
    findOwnWorkspace(controller.signal)
      .then((workspace) => {
        if (!controller.signal.aborted) setLookup(workspace ? { status: "found", workspace } : { status: "none" });
      })
      .catch((failure: unknown) => {
        if (!controller.signal.aborted) setLookup({ status: "error", message: messageOf(failure) });
      });
    return () => controller.abort();
  }, [attempt]);

  const workspaceId = lookup.status === "found" ? lookup.workspace.workspaceId : undefined;
  usePolling(
    async (signal) => {
      if (!workspaceId) return;
      try {
        // The state first: GetStatus through the edge would wake a sleeping workspace.
        const workspace = await provisioner("GetWorkspace", { workspaceId }, signal);
        const running = workspace.state === "WORKSPACE_STATE_RUNNING";
        const [runs, status, idle] = await Promise.all([
          api<ListJobRunsResponse>("/api/v1/scaler/ListJobRuns", { body: { workspaceId, page: { pageSize: 200 } }, signal }),
          running
            ? api<GetStatusResponse>(`${supervisorBase(workspaceId)}/GetStatus`, { body: {}, signal }).catch((failure: unknown) => {
                if (failure instanceof DOMException) throw failure;
                return failure instanceof ApiError ? failure : new ApiError(0, "UNKNOWN", messageOf(failure));
              })
            : Promise.resolve(undefined),
          running ? Promise.resolve(undefined) : api<GetIdleStatusResponse>("/api/v1/scaler/GetIdleStatus", { body: { workspaceIds: [workspaceId] }, signal }),
        ]);
        if (signal.aborted) return;
        setLookup((previous) => (previous.status === "found" && previous.workspace.state === workspace.state ? previous : { status: "found", workspace }));
        const statusFailed = status instanceof ApiError;
        setSnapshot({
          jobs: running && !statusFailed ? (status?.scheduledJobs ?? []) : undefined,
          runs: runs.jobRuns ?? [],
          nextWake: idle?.statuses?.[0]?.nextScheduledWakeTime,
          jobsError: statusFailed ? `Your workspace did not say which jobs it keeps. ${messageOf(status)}` : "",
        });
        setError("");
      } catch (failure) {
        if (!signal.aborted) setError(`The schedules could not be read. ${messageOf(failure)}`);
      }
    },
    REFRESH_MS,
    [workspaceId, refresh],
  );

  const state = lookup.status === "found" ? lookup.workspace.state : undefined;
  const running = state === "WORKSPACE_STATE_RUNNING";
  const jobs = snapshot?.jobs;
  const runs = snapshot?.runs ?? [];
  const known = new Set((jobs ?? []).map((job) => job.jobId));
  // Runs of jobs that are not listed (the workspace sleeps, or the job was removed since).
  const others = groupByJob(runs.filter((run) => !jobs || !known.has(run.jobId)));

  return (
    <Page testId="schedules-page" title="Schedules" wide>
      <p>
        Jobs the agent runs on a schedule, even while you are away: Tidepool wakes your workspace shortly before each one.
        Times are shown in your time zone{zone ? ` (${zone})` : ""} and in UTC.
      </p>

      {lookup.status === "loading" && (
        <p class="muted" role="status">
          Loading…
        </p>
      )}
      {lookup.status === "error" && (
        <div class="card">
          <ErrorMessage message={lookup.message} />
          <button type="button" class="button" onClick={() => setAttempt(attempt + 1)}>
            Try again
          </button>
        </div>
      )}
      {lookup.status === "none" && (
        <div class="card">
          <p>You do not have a workspace yet. It is created when you open <Link href="/">Home</Link>.</p>
        </div>
      )}

      <ErrorMessage message={error} />

      {lookup.status === "found" && (
        <>
          <div class="section-head">
            <h2 id="jobs-heading">Your jobs</h2>
            <button type="button" class="button button--small" onClick={() => setRefresh(refresh + 1)}>
              Refresh
            </button>
          </div>

          {!running && (
            <div class="card card--note" data-testid="schedules-not-running">
              {state === "WORKSPACE_STATE_SLEEPING" ? (
                <>
                  <p>
                    <strong>Your workspace is asleep</strong>, so the list of jobs cannot be read right now. Nothing is
                    lost: Tidepool keeps the jobs and wakes the workspace on its own shortly before each run.
                  </p>
                  <p data-testid="next-wake">
                    {snapshot?.nextWake ? (
                      <>
                        Next wake for a job: <When time={snapshot.nextWake} utc />.
                      </>
                    ) : (
                      "No job is due, so the workspace is not woken for one."
                    )}
                  </p>
                </>
              ) : (
                <p role="status">Workspace: {describe(lookup.workspace, false, false).label}</p>
              )}
              {waking ? (
                <Waker
                  onRunning={() => {
                    setWaking(false);
                    setRefresh(refresh + 1);
                  }}
                />
              ) : (
                (state === "WORKSPACE_STATE_SLEEPING" || state === "WORKSPACE_STATE_FAILED") && (
                  <button type="button" class="button button--primary" onClick={() => setWaking(true)}>
                    Wake it to see the jobs
                  </button>
                )
              )}
            </div>
          )}

          {running && snapshot?.jobsError && <ErrorMessage message={snapshot.jobsError} />}
          {running && !snapshot && (
            <p class="muted" role="status">
              Reading your jobs…
            </p>
          )}

          {jobs && jobs.length === 0 && (
            <div class="empty" data-testid="schedules-empty">
              <p>
                <strong>There are no scheduled jobs.</strong> When you ask the agent to do something regularly ("every
                weekday at 9am, summarise the news"), the job appears here with its next run.
              </p>
            </div>
          )}

          {jobs && jobs.length > 0 && (
            <ul class="job-list" aria-labelledby="jobs-heading">
              {jobs.map((job, index) => (
                <JobCard key={job.jobId || index} job={job} runs={runs.filter((run) => run.jobId === job.jobId)} />
              ))}
            </ul>
          )}

          {others.length > 0 && (
            <section aria-labelledby="history-heading" class="history">
              <h2 id="history-heading">{jobs ? "Runs of earlier jobs" : "Recent runs"}</h2>
              {others.map(([jobId, jobRuns]) => (
                <div key={jobId} class="card" data-testid="history-job" data-job={jobId}>
                  <h3>{jobRuns[0].jobName || jobId}</h3>
                  <RunList runs={jobRuns} />
                </div>
              ))}
            </section>
          )}
        </>
      )}
    </Page>
  );
}

function groupByJob(runs: JobRun[]): [string, JobRun[]][] {
  const groups = new Map<string, JobRun[]>();
  for (const run of runs) {
    const id = run.jobId ?? "";
    const group = groups.get(id) ?? [];
    group.push(run);
    groups.set(id, group);
  }
  return Array.from(groups.entries());
}

/** Wakes the workspace (useWorkspace: EnsureWorkspace, then polls) and says how far it got. */
function Waker({ onRunning }: { onRunning: () => void }) {
  const { workspace, waking, error, stopped } = useWorkspace(0);
  const running = workspace?.state === "WORKSPACE_STATE_RUNNING";
  useEffect(() => {
    if (running) onRunning();
  }, [running]);
  const { label } = describe(workspace, waking, stopped);
  return (
    <>
      <p role="status">Workspace: {label}</p>
      {!stopped && <progress class="progress" aria-label="Waking your workspace" />}
      <ErrorMessage message={error} />
    </>
  );
}

function JobCard({ job, runs }: { job: ScheduledJob; runs: JobRun[] }) {
  const name = job.name || job.jobId || "Unnamed job";
  const schedule = job.schedule ?? "";
  const words = scheduleInWords(schedule);
  const enabled = job.enabled !== false;
  const headingId = `job-${job.jobId ?? name}`.replace(/[^A-Za-z0-9_-]/g, "-");
  // A job that runs between whole minutes shows seconds in all of its times.
  const seconds = [job.nextRunTime, job.lastRun?.startTime, ...runs.map((run) => run.scheduledTime)].some(hasSeconds);
  return (
    <li class="card job" data-testid="job" data-job={job.jobId ?? ""} aria-labelledby={headingId}>
      <div class="job__head">
        <h3 id={headingId}>{name}</h3>
        {!enabled && <span class="badge">paused</span>}
      </div>
      <dl class="facts">
        <div>
          <dt>Schedule</dt>
          <dd data-testid="job-schedule">
            {words && <>{words}, </>}
            <code>{schedule}</code>
            {job.timezone && <> in {job.timezone} time</>}
          </dd>
        </div>
        <div>
          <dt>Next run</dt>
          <dd>
            {job.scheduleError ? (
              <span class="error-text" data-testid="job-error">
                This schedule cannot be understood ({job.scheduleError}), so the job does not run until it is fixed.
              </span>
            ) : !enabled ? (
              "None: the job is paused."
            ) : job.nextRunTime ? (
              <>
                <When time={job.nextRunTime} utc seconds={seconds} testId="next-run" />
                <span class="muted"> · {relative(new Date(job.nextRunTime))}</span>
              </>
            ) : (
              "None: the schedule has no further time."
            )}
          </dd>
        </div>
        {job.lastRun?.startTime && (
          <div>
            <dt>Last run</dt>
            <dd>
              <When time={job.lastRun.startTime} seconds={seconds} />
              {lastRunInWords(job.lastRun) && <>, {lastRunInWords(job.lastRun)}</>}
            </dd>
          </div>
        )}
        <div>
          <dt>If missed</dt>
          <dd>{policyInWords(job.missedRunPolicy)}</dd>
        </div>
      </dl>
      <h4>Recent runs</h4>
      {runs.length === 0 ? <p class="muted">No run yet.</p> : <RunList runs={runs} seconds={seconds} />}
    </li>
  );
}

function RunList({ runs, seconds }: { runs: JobRun[]; seconds?: boolean }) {
  const withSeconds = seconds ?? runs.some((run) => hasSeconds(run.scheduledTime));
  return (
    <ul class="runs" data-testid="runs">
      {runs.slice(0, RUNS_SHOWN).map((run) => {
        const { label, kind, detail } = outcomeInWords(run);
        return (
          <li key={`${run.jobId}-${run.scheduledTime}`} class="run" data-testid="run" data-outcome={run.outcome ?? ""}>
            <span class={`run__outcome run__outcome--${kind}`}>{label}</span>
            <span>
              {" "}
              for <When time={run.scheduledTime} seconds={withSeconds} />
            </span>
            {detail && <span class="run__detail">{detail}</span>}
          </li>
        );
      })}
    </ul>
  );
}
