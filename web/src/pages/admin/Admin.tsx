// The administrator's pages under /admin: users, workspaces, invites, the audit trail, capacity.
import type { Session } from "../../api";
import { Page } from "../../ui";

export function AdminPage({ path }: { path: string; session: Session }) {
  return (
    <Page testId="admin-page" title="Administration">
      <p class="muted">Not built yet ({path}).</p>
    </Page>
  );
}
