// "/admin/users": everyone who has an account (ListUsers, 50 at a time, searchable by e-mail,
// name or id and filterable by role and state, the filters kept in the address), with their
// workspace (ListWorkspaces). An administrator changes a person's role (SetUserRole), suspends
// them with a reason (SuspendUser: every session ends at once, their workspace stops and is
// held) and reinstates them (ReinstateUser), each after a confirmation dialog. Nobody acts on
// themself here: the server refuses to let an administrator suspend themself.
import { useEffect, useState } from "preact/hooks";
import type { TargetedEvent } from "preact";
import type { Session } from "../../api";
import { messageOf } from "../../api";
import { Link, navigate } from "../../router";
import { SelectField } from "../../ui";
import { AdminFrame } from "./Frame";
import {
  aborted,
  AdminTable,
  adminApi,
  byteLength,
  ConfirmDialog,
  FilterActions,
  ListStatus,
  ReasonField,
  Refusal,
  ShowMore,
  showing,
  useSearchParams,
  When,
  withQuery,
} from "./common";
import { roleLabel, userStateLabel, workspaceStateLabel } from "./format";
import type {
  AdminWorkspace,
  ListUsersResponse,
  ListWorkspacesResponse,
  Role,
  User,
  UserChangeResponse,
  UserState,
} from "./types";

const PAGE_SIZE = 50;
const MAX_REASON_BYTES = 512;
const COLUMNS = ["Person", "Role", "State", "Last sign-in", "Workspace", "Actions"];
const ROLES = [
  { value: "", label: "Any role" },
  { value: "ROLE_ADMIN", label: "Administrators" },
  { value: "ROLE_USER", label: "Users" },
];
const STATES = [
  { value: "", label: "Any state" },
  { value: "USER_STATE_ACTIVE", label: "Active" },
  { value: "USER_STATE_SUSPENDED", label: "Suspended" },
];

type Load =
  | { status: "loading" }
  | { status: "error"; message: string }
  | { status: "ready"; users: User[]; nextPageToken: string };

type Action = { kind: "suspend" | "reinstate" | "role"; user: User };

/** "Casey Jones (casey@corp.example)", or whichever of the two exists, or the id. */
function who(user: User): string {
  if (user.displayName && user.email && user.displayName !== user.email) return `${user.displayName} (${user.email})`;
  return user.email || user.displayName || user.userId || "this person";
}

export function UsersPage({ path, session }: { path: string; session: Session }) {
  const params = useSearchParams();
  const query = params.get("q") ?? "";
  const role = (params.get("role") ?? "") as Role | "";
  const state = (params.get("state") ?? "") as UserState | "";

  const [draftQuery, setDraftQuery] = useState(query);
  const [draftRole, setDraftRole] = useState<string>(role);
  const [draftState, setDraftState] = useState<string>(state);
  const [load, setLoad] = useState<Load>({ status: "loading" });
  const [attempt, setAttempt] = useState(0);
  const [workspaces, setWorkspaces] = useState<Map<string, AdminWorkspace>>(new Map());
  const [workspacesAttempt, setWorkspacesAttempt] = useState(0);
  const [action, setAction] = useState<Action | null>(null);
  const [notice, setNotice] = useState("");

  // The form follows the address (Back, a link from elsewhere).
  useEffect(() => {
    setDraftQuery(query);
    setDraftRole(role);
    setDraftState(state);
  }, [query, role, state]);

  useEffect(() => {
    const controller = new AbortController();
    setLoad({ status: "loading" });
    adminApi<ListUsersResponse>(
      "auth",
      "ListUsers",
      { query: query || undefined, role: role || undefined, state: state || undefined, page: { pageSize: PAGE_SIZE } },
      controller.signal,
    )
      .then((answer) =>
        setLoad({ status: "ready", users: answer.users ?? [], nextPageToken: answer.page?.nextPageToken ?? "" }),
      )
      .catch((error: unknown) => {
        if (!aborted(error)) setLoad({ status: "error", message: messageOf(error) });
      });
    return () => controller.abort();
  }, [query, role, state, attempt]);

  // Each person's workspace (one per person for now), again after each change; optional.
  useEffect(() => {
    const controller = new AbortController();
    adminApi<ListWorkspacesResponse>("provisioner", "ListWorkspaces", { page: { pageSize: 1000 } }, controller.signal)
      .then((answer) => {
        const byOwner = new Map<string, AdminWorkspace>();
        for (const workspace of answer.workspaces ?? []) {
          if (workspace.ownerUserId && !byOwner.has(workspace.ownerUserId)) byOwner.set(workspace.ownerUserId, workspace);
        }
        setWorkspaces(byOwner);
      })
      .catch(() => {
        // The column then says nothing rather than something wrong.
      });
    return () => controller.abort();
  }, [attempt, workspacesAttempt]);

  const search = (event: TargetedEvent<HTMLFormElement, Event>) => {
    event.preventDefault();
    setNotice("");
    const next = withQuery(path, { q: draftQuery.trim(), role: draftRole, state: draftState });
    if (next === `${path}${window.location.search}`) setAttempt(attempt + 1);
    else navigate(next);
  };

  const showMore = async () => {
    if (load.status !== "ready" || !load.nextPageToken) return;
    const answer = await adminApi<ListUsersResponse>("auth", "ListUsers", {
      query: query || undefined,
      role: role || undefined,
      state: state || undefined,
      page: { pageSize: PAGE_SIZE, pageToken: load.nextPageToken },
    });
    setLoad({
      status: "ready",
      users: [...load.users, ...(answer.users ?? [])],
      nextPageToken: answer.page?.nextPageToken ?? "",
    });
  };

  const replaced = (user: User | undefined) => {
    setWorkspacesAttempt((n) => n + 1);
    if (!user?.userId) return;
    setLoad((previous) =>
      previous.status === "ready"
        ? { ...previous, users: previous.users.map((u) => (u.userId === user.userId ? user : u)) }
        : previous,
    );
  };

  const filtered = Boolean(query || role || state);
  const count =
    load.status !== "ready"
      ? ""
      : load.users.length === 0
        ? filtered
          ? "No one matches this search."
          : "No one has an account yet."
        : showing(load.users.length, ["person", "people"], Boolean(load.nextPageToken));

  return (
    <AdminFrame path={path} testId="admin-users-page" title="Users">
      <form class="admin-filters" role="search" aria-label="Find people" onSubmit={search}>
        <div class="field admin-filters__wide">
          <label for="user-search">Search</label>
          <input
            id="user-search"
            type="search"
            value={draftQuery}
            maxLength={256}
            autocomplete="off"
            spellcheck={false}
            aria-describedby="user-search-hint"
            onInput={(event) => setDraftQuery(event.currentTarget.value)}
          />
          <p class="hint" id="user-search-hint">
            Part of an e-mail address or name, or a user id.
          </p>
        </div>
        <SelectField id="user-role" label="Role" value={draftRole} options={ROLES} onValue={setDraftRole} />
        <SelectField id="user-state" label="State" value={draftState} options={STATES} onValue={setDraftState} />
        <FilterActions label="Search" path={path} filtered={filtered} />
      </form>

      <p class="notice" role="status" data-testid="users-notice">
        {notice}
      </p>

      <ListStatus
        load={load}
        loadingText="Loading the people…"
        failureText="The people could not be listed."
        onRetry={() => setAttempt(attempt + 1)}
        count={count}
        countTestId="users-count"
      />
      {load.status === "ready" && load.users.length > 0 && (
        <AdminTable name="users" caption="People with an account" columns={COLUMNS}>
          {load.users.map((user) => (
            <UserRow
              key={user.userId}
              user={user}
              self={user.userId === session.userId}
              workspace={workspaces.get(user.userId ?? "")}
              onAction={(kind) => {
                setNotice("");
                setAction({ kind, user });
              }}
            />
          ))}
        </AdminTable>
      )}
      {load.status === "ready" && load.nextPageToken && <ShowMore label="Show more people" onMore={showMore} />}

      {action?.kind === "suspend" && (
        <SuspendDialog
          user={action.user}
          onClose={() => setAction(null)}
          onDone={(answer) => {
            replaced(answer.user);
            const ended = answer.revokedSessionCount ?? 0;
            setNotice(
              `${who(action.user)} is suspended. ${
                ended === 1 ? "1 session was ended" : `${ended} sessions were ended`
              } and their workspace is on hold.`,
            );
          }}
        />
      )}
      {action?.kind === "reinstate" && (
        <ReinstateDialog
          user={action.user}
          onClose={() => setAction(null)}
          onDone={(answer) => {
            replaced(answer.user);
            setNotice(`${who(action.user)} is active again and can sign in.`);
          }}
        />
      )}
      {action?.kind === "role" && (
        <RoleDialog
          user={action.user}
          onClose={() => setAction(null)}
          onDone={(answer) => {
            replaced(answer.user);
            setNotice(`${who(action.user)} is now ${answer.user?.role === "ROLE_ADMIN" ? "an administrator" : "a user"}.`);
          }}
        />
      )}
    </AdminFrame>
  );
}

interface UserRowProps {
  user: User;
  self: boolean;
  workspace: AdminWorkspace | undefined;
  onAction: (kind: Action["kind"]) => void;
}

function UserRow({ user, self, workspace, onAction }: UserRowProps) {
  const suspended = user.state === "USER_STATE_SUSPENDED";
  const name = user.email || user.displayName || user.userId || "";
  const providers = (user.identities ?? []).map((i) => i.providerId).filter(Boolean);
  return (
    <tr data-testid="user-row" data-email={user.email ?? ""} data-user-id={user.userId} data-state={user.state}>
      <th scope="row" class="admin-table__main">
        {user.displayName && user.displayName !== user.email && <span class="admin-strong">{user.displayName}</span>}
        <span class={user.displayName && user.displayName !== user.email ? "admin-sub" : "admin-strong"}>
          {user.email || user.userId}
        </span>
        <span class="admin-sub admin-mono">
          {user.userId}
          {providers.length > 0 ? ` · via ${providers.join(", ")}` : ""}
        </span>
      </th>
      <td data-testid="user-role">{roleLabel(user.role)}</td>
      <td>
        <span
          class={suspended ? "status-pill status-pill--bad" : "status-pill status-pill--good"}
          data-testid="user-state"
        >
          {userStateLabel(user.state)}
        </span>
        {suspended && user.suspendReason && <span class="admin-sub">Reason: {user.suspendReason}</span>}
      </td>
      <td>
        <When time={user.lastSignInTime} />
      </td>
      <td>
        {workspace?.workspaceId ? (
          <Link href={withQuery("/admin/workspaces", { owner: user.userId ?? "" })}>
            {workspaceStateLabel(workspace.state)}
            <span class="visually-hidden"> workspace of {name}</span>
          </Link>
        ) : (
          <span class="muted">None yet</span>
        )}
      </td>
      <td>
        {self ? (
          <span class="muted">This is you</span>
        ) : (
          <div class="admin-actions">
            <button type="button" class="button button--small" onClick={() => onAction("role")}>
              {user.role === "ROLE_ADMIN" ? "Make user" : "Make administrator"}
              <span class="visually-hidden"> ({name})</span>
            </button>
            {suspended ? (
              <button type="button" class="button button--small" onClick={() => onAction("reinstate")}>
                Reinstate<span class="visually-hidden"> {name}</span>
              </button>
            ) : (
              <button type="button" class="button button--small button--danger" onClick={() => onAction("suspend")}>
                Suspend<span class="visually-hidden"> {name}</span>
              </button>
            )}
          </div>
        )}
      </td>
    </tr>
  );
}

interface DialogProps {
  user: User;
  onClose: () => void;
  onDone: (answer: UserChangeResponse) => void;
}

function SuspendDialog({ user, onClose, onDone }: DialogProps) {
  const [reason, setReason] = useState("");
  return (
    <ConfirmDialog
      title={`Suspend ${who(user)}?`}
      confirmLabel="Suspend"
      busyLabel="Suspending…"
      danger
      testId="suspend-dialog"
      onClose={onClose}
      onConfirm={async () => {
        const trimmed = reason.trim();
        if (!trimmed) throw new Refusal("Say why first: the reason is shown to administrators and kept in the audit trail.");
        if (byteLength(trimmed) > MAX_REASON_BYTES) throw new Refusal("The reason is too long: keep it under 500 characters.");
        onDone(await adminApi<UserChangeResponse>("auth", "SuspendUser", { userId: user.userId, reason: trimmed }));
      }}
    >
      <p>
        They are signed out everywhere at once: open pages, terminals and agent sessions end. Their workspace stops and
        stays on hold, with every file kept. They cannot sign in until you reinstate them.
      </p>
      <ReasonField
        id="suspend-reason"
        label="Reason"
        hint="Required. Shown to administrators and kept in the audit trail."
        value={reason}
        onValue={setReason}
        required
      />
    </ConfirmDialog>
  );
}

function ReinstateDialog({ user, onClose, onDone }: DialogProps) {
  const [reason, setReason] = useState("");
  return (
    <ConfirmDialog
      title={`Reinstate ${who(user)}?`}
      confirmLabel="Reinstate"
      busyLabel="Reinstating…"
      testId="reinstate-dialog"
      onClose={onClose}
      onConfirm={async () => {
        const trimmed = reason.trim();
        if (byteLength(trimmed) > MAX_REASON_BYTES) throw new Refusal("The reason is too long: keep it under 500 characters.");
        onDone(
          await adminApi<UserChangeResponse>("auth", "ReinstateUser", { userId: user.userId, reason: trimmed || undefined }),
        );
      }}
    >
      <p>They can sign in again. Their workspace stays asleep until they next use it.</p>
      {user.suspendReason && <p class="muted">Suspended because: {user.suspendReason}</p>}
      <ReasonField
        id="reinstate-reason"
        label="Reason (optional)"
        hint="Kept in the audit trail."
        value={reason}
        onValue={setReason}
      />
    </ConfirmDialog>
  );
}

function RoleDialog({ user, onClose, onDone }: DialogProps) {
  const toAdmin = user.role !== "ROLE_ADMIN";
  return (
    <ConfirmDialog
      title={toAdmin ? `Make ${who(user)} an administrator?` : `Make ${who(user)} a user?`}
      confirmLabel={toAdmin ? "Make administrator" : "Make user"}
      busyLabel="Changing…"
      danger={toAdmin}
      focusCancel
      testId="role-dialog"
      onClose={onClose}
      onConfirm={async () => {
        onDone(
          await adminApi<UserChangeResponse>("auth", "SetUserRole", {
            userId: user.userId,
            role: toAdmin ? "ROLE_ADMIN" : "ROLE_USER",
            expectedVersion: user.version,
          }),
        );
      }}
    >
      <p>
        {toAdmin
          ? "Administrators see every workspace, every person and the audit trail, and can suspend people and delete workspaces."
          : "They keep their workspace but lose access to these administration pages."}{" "}
        They are signed out once and sign in again with the new role.
      </p>
    </ConfirmDialog>
  );
}
