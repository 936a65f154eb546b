// The administrator's pages under /admin: users, workspaces, invites, the audit trail, capacity.
// /admin itself goes to /admin/users (replacing the history entry); an unknown /admin/... shows
// the not-found page. Each page is a <Page> of its own (its own title, heading and test id),
// with the same sub-navigation under the heading. app.tsx shows these pages to administrators
// only; the backends check the role again on every call.
import { useEffect } from "preact/hooks";
import type { Session } from "../../api";
import { navigate } from "../../router";
import { LoadingPage } from "../../ui";
import { NotFoundPage } from "../NotFound";
import { AuditPage } from "./Audit";
import { CapacityPage } from "./Capacity";
import { InvitesPage } from "./Invites";
import { UsersPage } from "./Users";
import { WorkspacesPage } from "./Workspaces";

/** Goes to `to` at once, replacing the current history entry (Back skips it). */
function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to, { replace: true }), [to]);
  return <LoadingPage />;
}

export function AdminPage({ path, session }: { path: string; session: Session }) {
  // "/admin/users/" is "/admin/users".
  const normalized = path.length > 1 ? path.replace(/\/+$/, "") : path;
  switch (normalized) {
    case "/admin":
      return <Redirect to="/admin/users" />;
    case "/admin/users":
      return <UsersPage path={normalized} session={session} />;
    case "/admin/workspaces":
      return <WorkspacesPage path={normalized} />;
    case "/admin/invites":
      return <InvitesPage path={normalized} />;
    case "/admin/audit":
      return <AuditPage path={normalized} />;
    case "/admin/capacity":
      return <CapacityPage path={normalized} />;
    default:
      return <NotFoundPage />;
  }
}
