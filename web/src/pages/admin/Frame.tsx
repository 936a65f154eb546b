// The frame of every administrator's page: the page itself (its title, heading and test id) with
// the sub-navigation between the administrator's pages under the heading.
import type { ComponentChildren } from "preact";
import { Link } from "../../router";
import { Page } from "../../ui";

const SECTIONS = [
  { path: "/admin/users", label: "Users" },
  { path: "/admin/workspaces", label: "Workspaces" },
  { path: "/admin/invites", label: "Invites" },
  { path: "/admin/audit", label: "Audit trail" },
  { path: "/admin/capacity", label: "Capacity" },
];

/** The sub-navigation between the administrator's pages. */
function AdminNav({ path }: { path: string }) {
  return (
    <nav class="admin-nav" aria-label="Administration">
      <ul>
        {SECTIONS.map((section) => (
          <li key={section.path}>
            <Link href={section.path} aria-current={path === section.path ? "page" : undefined}>
              {section.label}
            </Link>
          </li>
        ))}
      </ul>
    </nav>
  );
}

interface AdminFrameProps {
  path: string;
  testId: string;
  title: string;
  children?: ComponentChildren;
}

/** One administrator's page: the page frame, its heading, the sub-navigation, the content. */
export function AdminFrame({ path, testId, title, children }: AdminFrameProps) {
  return (
    <Page testId={testId} title={`${title} · Administration`} heading={title} wide>
      <div class="admin">
        <AdminNav path={path} />
        {children}
      </div>
    </Page>
  );
}
