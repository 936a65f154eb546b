// Numbers, times and enum names of the administrator's pages in plain words.
import type { InviteState, KeepAwakeReason, Outcome, Role, UserState, WorkspaceHealth } from "./types";

const timeFormat = (() => {
  try {
    return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  } catch {
    return undefined;
  }
})();

const secondsFormat = (() => {
  try {
    return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  } catch {
    return undefined;
  }
})();

/** An RFC 3339 timestamp (possibly with nanoseconds) as a Date, or undefined. */
export function parseTime(text: string | undefined): Date | undefined {
  if (!text) return undefined;
  const date = new Date(text.replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(date.getTime()) || date.getTime() <= 0 ? undefined : date;
}

/** "5 Mar 2026, 14:02" in the browser's language and time zone. */
export function formatTime(date: Date, withSeconds = false): string {
  const format = withSeconds ? secondsFormat : timeFormat;
  return format ? format.format(date) : date.toISOString();
}

/** "3 min ago", "in 25 min", "just now": for times near now; beyond a week, the date. */
export function relativeTime(date: Date, now: number = Date.now()): string {
  const seconds = Math.round((date.getTime() - now) / 1000);
  const magnitude = Math.abs(seconds);
  if (magnitude < 45) return "just now";
  if (magnitude > 7 * 86400) return formatTime(date);
  const span = formatDurationSeconds(magnitude);
  return seconds < 0 ? `${span} ago` : `in ${span}`;
}

/** A protobuf Duration in JSON ("1800s", "0.250s") as seconds; undefined if absent or bad. */
export function parseDuration(text: string | undefined): number | undefined {
  if (!text) return undefined;
  const match = /^(-?\d+(?:\.\d+)?)s$/.exec(text.trim());
  return match ? Number(match[1]) : undefined;
}

/** 42 → "42 s", 90 → "1 min 30 s", 7200 → "2 h", 90000 → "1 day 1 h". */
export function formatDurationSeconds(total: number): string {
  const seconds = Math.max(0, Math.round(total));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    const rest = seconds % 60;
    return rest && minutes < 10 ? `${minutes} min ${rest} s` : `${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 24) {
    const rest = minutes % 60;
    return rest ? `${hours} h ${rest} min` : `${hours} h`;
  }
  const days = Math.floor(hours / 24);
  const rest = hours % 24;
  const dayWord = days === 1 ? "day" : "days";
  return rest ? `${days} ${dayWord} ${rest} h` : `${days} ${dayWord}`;
}

/** A protobuf int64 (a string in JSON) or number as a number; 0 when absent. */
export function int(value: string | number | undefined): number {
  const parsed = typeof value === "number" ? value : Number(value ?? 0);
  return Number.isFinite(parsed) ? parsed : 0;
}

/** 1536 → "1.5 KiB", 0 → "0 B". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits).replace(/\.0+$/, "")} ${units[unit]}`;
}

/** 250 → "0.25 cores", 1000 → "1 core". */
export function formatMillicores(millicores: number): string {
  const cores = millicores / 1000;
  const text = cores >= 10 ? cores.toFixed(0) : cores.toFixed(2).replace(/\.?0+$/, "");
  return `${text || "0"} ${cores === 1 ? "core" : "cores"}`;
}

/** A whole-number share: 0.234 → "23 %". */
export function formatPercent(share: number): string {
  return `${Math.round(share * 100)} %`;
}

/** "tidepool_thing_name" → "tidepool thing name" */
export function plainCode(code: string | undefined): string {
  return (code ?? "").replace(/_/g, " ").trim();
}

export function roleLabel(role: Role | undefined): string {
  return role === "ROLE_ADMIN" ? "Administrator" : role === "ROLE_USER" ? "User" : "Unknown";
}

export function userStateLabel(state: UserState | undefined): string {
  return state === "USER_STATE_SUSPENDED" ? "Suspended" : state === "USER_STATE_ACTIVE" ? "Active" : "Unknown";
}

/** The workspace states an administrator sees, in words. */
export const WORKSPACE_STATES: { value: string; label: string }[] = [
  { value: "WORKSPACE_STATE_RUNNING", label: "Running" },
  { value: "WORKSPACE_STATE_SLEEPING", label: "Asleep" },
  { value: "WORKSPACE_STATE_PROVISIONING", label: "Starting" },
  { value: "WORKSPACE_STATE_FAILED", label: "Failed" },
  { value: "WORKSPACE_STATE_SUSPENDED", label: "Suspended" },
  { value: "WORKSPACE_STATE_DELETED", label: "Deleted" },
];

export function workspaceStateLabel(state: string | undefined): string {
  return WORKSPACE_STATES.find((s) => s.value === state)?.label ?? "Unknown";
}

export function healthLabel(health: WorkspaceHealth | undefined): string {
  switch (health) {
    case "WORKSPACE_HEALTH_HEALTHY":
      return "Healthy";
    case "WORKSPACE_HEALTH_DEGRADED":
      return "Needs attention";
    case "WORKSPACE_HEALTH_UNHEALTHY":
      return "Unhealthy";
    default:
      return "";
  }
}

const KEEP_AWAKE: Record<KeepAwakeReason, string> = {
  KEEP_AWAKE_REASON_UNSPECIFIED: "Another reason",
  KEEP_AWAKE_REASON_PINNED: "Pinned awake by an administrator",
  KEEP_AWAKE_REASON_GRACE_AFTER_WAKE: "Just woke up (grace period)",
  KEEP_AWAKE_REASON_SCHEDULED_JOB_SOON: "A scheduled task runs soon",
  KEEP_AWAKE_REASON_MESSAGING_CHANNEL: "A chat app (Slack or Telegram) is connected",
  KEEP_AWAKE_REASON_RECENT_ACTIVITY: "Used recently",
  KEEP_AWAKE_REASON_SCHEDULED_JOB_RUNNING: "A scheduled task is running",
  KEEP_AWAKE_REASON_WORK_PROCESS: "The agent is working",
  KEEP_AWAKE_REASON_ALWAYS_ON: "Set to always on",
  KEEP_AWAKE_REASON_OPEN_CONNECTION: "A terminal or live connection is open",
};

export function keepAwakeLabel(reason: KeepAwakeReason): string {
  return KEEP_AWAKE[reason] ?? plainCode(reason.replace(/^KEEP_AWAKE_REASON_/, "").toLowerCase());
}

const ACTIVITY: Record<string, string> = {
  ACTIVITY_SOURCE_HTTP: "web page",
  ACTIVITY_SOURCE_WEBSOCKET: "live connection",
  ACTIVITY_SOURCE_TERMINAL_INPUT: "terminal",
  ACTIVITY_SOURCE_AGENT_TURN: "agent",
  ACTIVITY_SOURCE_WORK_PROCESS: "work process",
  ACTIVITY_SOURCE_SCHEDULED_JOB: "scheduled task",
};

export function activityLabel(source: string | undefined): string {
  return (source && ACTIVITY[source]) || "";
}

export function inviteStateLabel(state: InviteState | undefined): string {
  switch (state) {
    case "INVITE_STATE_ACTIVE":
      return "Active";
    case "INVITE_STATE_EXPIRED":
      return "Expired";
    case "INVITE_STATE_USED_UP":
      return "Used up";
    case "INVITE_STATE_REVOKED":
      return "Revoked";
    default:
      return "Unknown";
  }
}

export const OUTCOMES: { value: Outcome; label: string }[] = [
  { value: "OUTCOME_SUCCESS", label: "Succeeded" },
  { value: "OUTCOME_FAILURE", label: "Failed" },
  { value: "OUTCOME_DENIED", label: "Denied" },
  { value: "OUTCOME_ERROR", label: "Platform error" },
];

export function outcomeLabel(outcome: Outcome | undefined): string {
  return OUTCOMES.find((o) => o.value === outcome)?.label ?? "Unknown";
}

const DECISION_ACTIONS: Record<string, string> = {
  DECISION_ACTION_SLEEP: "Put to sleep",
  DECISION_ACTION_WAKE: "Woken",
  DECISION_ACTION_KEEP_AWAKE: "Kept awake",
};

export function decisionActionLabel(action: string | undefined): string {
  return (action && DECISION_ACTIONS[action]) || "Unknown";
}

const DECISION_REASONS: Record<string, string> = {
  DECISION_REASON_IDLE_TIMEOUT: "idle too long",
  DECISION_REASON_SCHEDULED_JOB: "scheduled task",
  DECISION_REASON_MESSAGE: "a message arrived",
  DECISION_REASON_KEEP_AWAKE: "something keeps it awake",
  DECISION_REASON_MISSED_RUN: "a missed scheduled run",
};

export function decisionReasonLabel(reason: string | undefined): string {
  return (reason && DECISION_REASONS[reason]) || "";
}

const VERIFY_FAILURES: Record<string, string> = {
  VERIFY_FAILURE_HASH_MISMATCH: "a record was edited",
  VERIFY_FAILURE_PREV_HASH_MISMATCH: "a record was deleted, inserted or swapped",
  VERIFY_FAILURE_SEQUENCE_GAP: "a record is missing",
  VERIFY_FAILURE_SEQUENCE_ORDER: "records are out of order or duplicated",
  VERIFY_FAILURE_TRUNCATED: "records were cut off the end",
  VERIFY_FAILURE_CHECKPOINT_MISMATCH: "a signed checkpoint disagrees with the records (forked history)",
  VERIFY_FAILURE_CHECKPOINT_SIGNATURE: "a checkpoint's signature does not verify",
  VERIFY_FAILURE_CHECKPOINT_ROLLBACK: "checkpoints go backwards",
  VERIFY_FAILURE_MALFORMED_RECORD: "a record cannot be read",
};

export function verifyFailureLabel(failure: string | undefined): string {
  return (failure && VERIFY_FAILURES[failure]) || "the chain does not hold together";
}

/** "a", "a and b", "a, b and c" */
export function listed(names: string[]): string {
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}
