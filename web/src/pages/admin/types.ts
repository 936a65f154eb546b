// The shapes the administrator's pages read and send (protobuf JSON: camelCase, default values
// omitted, enums as their names, int64 as strings, Timestamps as RFC 3339 strings, Durations as
// "1.5s"). Only the fields these pages use are listed. See proto/tidepool/{auth,provisioner,
// scaler,audit}/v1/*.proto for the full messages.
import type { Workspace } from "../../api";

/** tidepool.common.v1.PageRequest */
export interface PageRequest {
  pageSize?: number;
  pageToken?: string;
}

/** tidepool.common.v1.PageResponse */
export interface PageResponse {
  nextPageToken?: string;
  /** -1 (or absent) when the server does not count. */
  totalSize?: string;
}

// ---- tidepool.auth.v1

export type Role = "ROLE_UNSPECIFIED" | "ROLE_USER" | "ROLE_ADMIN";
export type UserState = "USER_STATE_UNSPECIFIED" | "USER_STATE_ACTIVE" | "USER_STATE_SUSPENDED";

/** tidepool.auth.v1.LinkedIdentity */
export interface LinkedIdentity {
  providerId?: string;
  providerKind?: string;
  email?: string;
  lastSignInTime?: string;
}

/** tidepool.auth.v1.User */
export interface User {
  userId?: string;
  email?: string;
  displayName?: string;
  role?: Role;
  state?: UserState;
  suspendReason?: string;
  timezone?: string;
  createTime?: string;
  lastSignInTime?: string;
  identities?: LinkedIdentity[];
  version?: string;
}

export interface ListUsersRequest {
  query?: string;
  role?: Role;
  state?: UserState;
  page?: PageRequest;
}

export interface ListUsersResponse {
  users?: User[];
  page?: PageResponse;
}

/** SetUserRole, SuspendUser and ReinstateUser answer with the user after the change. */
export interface UserChangeResponse {
  user?: User;
  revokedSessionCount?: number;
}

export type InviteState =
  | "INVITE_STATE_UNSPECIFIED"
  | "INVITE_STATE_ACTIVE"
  | "INVITE_STATE_EXPIRED"
  | "INVITE_STATE_USED_UP"
  | "INVITE_STATE_REVOKED";

/** tidepool.auth.v1.Invite (never the code) */
export interface Invite {
  inviteId?: string;
  boundEmail?: string;
  boundDomain?: string;
  maxUses?: number;
  useCount?: number;
  createTime?: string;
  expireTime?: string;
  createdByUserId?: string;
  state?: InviteState;
  note?: string;
  codeFingerprint?: string;
}

export interface CreateInviteRequest {
  maxUses?: number;
  expireTime?: string;
  boundEmail?: string;
  boundDomain?: string;
  note?: string;
}

export interface CreateInviteResponse {
  invite?: Invite;
  /** The code: returned here only, once. */
  code?: string;
}

export interface ListInvitesResponse {
  invites?: Invite[];
  page?: PageResponse;
}

export interface RevokeInviteResponse {
  invite?: Invite;
}

// ---- tidepool.provisioner.v1

export type WorkspaceHealth =
  | "WORKSPACE_HEALTH_UNSPECIFIED"
  | "WORKSPACE_HEALTH_HEALTHY"
  | "WORKSPACE_HEALTH_DEGRADED"
  | "WORKSPACE_HEALTH_UNHEALTHY";

/** tidepool.provisioner.v1.Workspace, with the fields the shared type leaves out. */
export interface AdminWorkspace extends Workspace {
  health?: WorkspaceHealth;
  runtime?: string;
  createTime?: string;
  updateTime?: string;
  lastTransitionTime?: string;
}

export interface ListWorkspacesResponse {
  workspaces?: AdminWorkspace[];
  page?: PageResponse;
}

/** tidepool.provisioner.v1.WorkspaceUsage (int64 fields are strings). */
export interface WorkspaceUsage {
  cpuTime?: string;
  cpuMillicores?: string;
  cpuLimitMillicores?: string;
  memoryBytes?: string;
  memoryLimitBytes?: string;
  diskUsedBytes?: string;
  diskQuotaBytes?: string;
  pidCount?: number;
  pidLimit?: number;
  sampleTime?: string;
}

export interface GetUsageResponse {
  usage?: WorkspaceUsage;
  state?: string;
}

/** StopWorkspace, WakeWorkspace, RestartWorkspace, DeleteWorkspace and GetWorkspace. */
export interface AdminWorkspaceResponse {
  workspace?: AdminWorkspace;
}

// ---- tidepool.scaler.v1

export type KeepAwakeReason =
  | "KEEP_AWAKE_REASON_UNSPECIFIED"
  | "KEEP_AWAKE_REASON_PINNED"
  | "KEEP_AWAKE_REASON_GRACE_AFTER_WAKE"
  | "KEEP_AWAKE_REASON_SCHEDULED_JOB_SOON"
  | "KEEP_AWAKE_REASON_MESSAGING_CHANNEL"
  | "KEEP_AWAKE_REASON_RECENT_ACTIVITY"
  | "KEEP_AWAKE_REASON_SCHEDULED_JOB_RUNNING"
  | "KEEP_AWAKE_REASON_WORK_PROCESS"
  | "KEEP_AWAKE_REASON_ALWAYS_ON"
  | "KEEP_AWAKE_REASON_OPEN_CONNECTION";

/** tidepool.scaler.v1.IdleStatus */
export interface IdleStatus {
  workspaceId?: string;
  ownerUserId?: string;
  state?: string;
  lastActivityTime?: string;
  lastActivitySource?: string;
  idleDuration?: string;
  idleTimeout?: string;
  keepAwakeReasons?: KeepAwakeReason[];
  sleepTime?: string;
  nextScheduledWakeTime?: string;
  pinned?: boolean;
  pinExpireTime?: string;
}

export interface GetIdleStatusResponse {
  statuses?: IdleStatus[];
  page?: PageResponse;
}

/** tidepool.scaler.v1.GetCapacityReportResponse (int64 fields are strings). */
export interface CapacityReport {
  runningCount?: number;
  sleepingCount?: number;
  alwaysOnCount?: number;
  provisioningCount?: number;
  failedCount?: number;
  suspendedCount?: number;
  projectedCpuMillicores?: string;
  projectedMemoryBytes?: string;
  capacityCpuMillicores?: string;
  capacityMemoryBytes?: string;
  horizon?: string;
  reportTime?: string;
}

/** tidepool.scaler.v1.IdlePolicy */
export interface IdlePolicy {
  idleTimeout?: string;
  checkInterval?: string;
  graceAfterWake?: string;
  wakeBeforeJob?: string;
  keepMessagingAwake?: boolean;
  userOverrides?: { userId?: string; idleTimeout?: string; alwaysOn?: boolean }[];
}

export interface GetPolicyResponse {
  policy?: IdlePolicy;
  version?: string;
}

/** tidepool.scaler.v1.Decision */
export interface Decision {
  decisionId?: string;
  workspaceId?: string;
  decideTime?: string;
  action?: string;
  reason?: string;
  keepAwakeReasons?: KeepAwakeReason[];
  idleDuration?: string;
  succeeded?: boolean;
  errorCode?: string;
  detail?: string;
}

export interface ListDecisionsResponse {
  decisions?: Decision[];
  page?: PageResponse;
}

// ---- tidepool.audit.v1

export type Outcome = "OUTCOME_UNSPECIFIED" | "OUTCOME_SUCCESS" | "OUTCOME_FAILURE" | "OUTCOME_DENIED" | "OUTCOME_ERROR";

/** tidepool.common.v1.AuditEvent (uint64 sequence as a string; hashes as base64). */
export interface AuditEvent {
  sequence?: string;
  serverTime?: string;
  clientTime?: string;
  actor?: { kind?: string; id?: string };
  action?: string;
  subjectUserId?: string;
  workspaceId?: string;
  outcome?: Outcome;
  reasonCode?: string;
  requestId?: string;
  sourceAddress?: string;
  attributes?: Record<string, string>;
  prevHash?: string;
  hash?: string;
  eventId?: string;
  sourceService?: string;
}

/** tidepool.audit.v1.AuditFilter */
export interface AuditFilter {
  actorId?: string;
  subjectUserId?: string;
  workspaceId?: string;
  actionPrefix?: string;
  outcome?: Outcome;
  startTime?: string;
  endTime?: string;
}

export interface QueryResponse {
  events?: AuditEvent[];
  page?: PageResponse;
}

/** tidepool.audit.v1.VerifyResponse (uint64 fields are strings). */
export interface VerifyResponse {
  result?: "VERIFY_RESULT_UNSPECIFIED" | "VERIFY_RESULT_OK" | "VERIFY_RESULT_BROKEN";
  firstBadSequence?: string;
  failure?: string;
  detail?: string;
  startSequence?: string;
  endSequence?: string;
  verifiedRecordCount?: string;
  verifiedCheckpointCount?: string;
}
