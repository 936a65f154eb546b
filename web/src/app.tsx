// The app's frame and routes. Every path of SIGNED_IN_PATHS (and everything under /admin/) shows
// the sign-in page or its own page, depending on GET /auth/session (checked again on every
// navigation). Signed in, the top bar carries the navigation (Home, Files, Terminal, Keys,
// Previews, Schedules, and Admin for administrators).
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, csrfToken, messageOf, setUnauthorizedHandler, type Session } from "./api";
import { FilesPage } from "./pages/Files";
import { HomePage } from "./pages/Home";
import { KeysPage } from "./pages/Keys";
import { AdminPage } from "./pages/admin/Admin";
import { NotFoundPage } from "./pages/NotFound";
import { PreviewsPage } from "./pages/Previews";
import { SchedulesPage } from "./pages/Schedules";
import { SetupPage } from "./pages/Setup";
import { SignInPage } from "./pages/SignIn";
import { TerminalPage } from "./pages/Terminal";
import { Link, navigate, useLocation, type Location } from "./router";
import { ErrorMessage, LoadingPage, Page } from "./ui";

/** The pages that need a session; signed out, they show the sign-in page and come back after. */
const SIGNED_IN_PATHS = new Set(["/", "/files", "/terminal", "/keys", "/previews", "/schedules"]);

/** Whether a path needs a session: SIGNED_IN_PATHS and the admin pages. */
function needsSession(path: string): boolean {
  return SIGNED_IN_PATHS.has(path) || path === "/admin" || path.startsWith("/admin/");
}

/** The top navigation, shown when signed in. */
const NAVIGATION = [
  { href: "/", label: "Home" },
  { href: "/files", label: "Files" },
  { href: "/terminal", label: "Terminal" },
  { href: "/keys", label: "Keys" },
  { href: "/previews", label: "Previews" },
  { href: "/schedules", label: "Schedules" },
];

type SessionState =
  | { status: "loading" }
  | { status: "signed-out" }
  | { status: "signed-in"; session: Session }
  | { status: "error"; message: string };

export function App() {
  const location = useLocation();
  const [session, setSession] = useState<SessionState>({ status: "loading" });
  const [attempt, setAttempt] = useState(0);

  // Any call that finds the session gone brings the person to the sign-in page.
  useEffect(() => {
    setUnauthorizedHandler(() => {
      setSession({ status: "signed-out" });
      if (!needsSession(window.location.pathname)) navigate("/");
    });
  }, []);

  const guarded = needsSession(location.path);
  useEffect(() => {
    if (!guarded) return undefined;
    // The CSRF cookie is set and cleared with the session cookies: without it there is no
    // session to ask about (and no 401 to log in the browser's console).
    if (!csrfToken()) {
      setSession({ status: "signed-out" });
      return undefined;
    }
    const controller = new AbortController();
    setSession((previous) => (previous.status === "signed-in" ? previous : { status: "loading" }));
    api<Session>("/auth/session", { signal: controller.signal })
      .then((answer) => setSession({ status: "signed-in", session: answer }))
      .catch((error: unknown) => {
        if (controller.signal.aborted) return;
        // The 401 itself is handled by the unauthorized handler.
        if (!(error instanceof ApiError && error.status === 401)) {
          setSession({ status: "error", message: messageOf(error) });
        }
      });
    return () => controller.abort();
  }, [guarded, location.key, attempt]);

  return (
    <>
      <header class="topbar">
        <Link class="brand" href="/">
          Tidepool
        </Link>
        {session.status === "signed-in" && (
          <nav class="topnav" aria-label="Main">
            <ul>
              {navigationFor(session.session).map(({ href, label }) => (
                <li key={href}>
                  <Link
                    href={href}
                    aria-current={
                      location.path === href || (href === "/admin" && location.path.startsWith("/admin/")) ? "page" : undefined
                    }
                  >
                    {label}
                  </Link>
                </li>
              ))}
            </ul>
          </nav>
        )}
      </header>
      {route(location, session, () => setAttempt(attempt + 1))}
    </>
  );
}

function navigationFor(session: Session) {
  return session.role === "admin" ? [...NAVIGATION, { href: "/admin", label: "Admin" }] : NAVIGATION;
}

function route({ path, key }: Location, session: SessionState, retry: () => void) {
  // Keyed by the navigation, so that the setup page reads the link's token again.
  if (path === "/setup") return <SetupPage key={key} />;
  if (!needsSession(path)) return <NotFoundPage />;
  switch (session.status) {
    case "loading":
      return <LoadingPage />;
    case "signed-out":
      return <SignInPage returnPath={path} />;
    case "signed-in":
      if (path === "/keys") return <KeysPage key={session.session.sessionId} />;
      if (path === "/files") return <FilesPage key={session.session.sessionId} />;
      if (path === "/terminal") return <TerminalPage key={session.session.sessionId} />;
      if (path === "/previews") {
        return <PreviewsPage key={session.session.sessionId} previewDomain={session.session.previewDomain ?? ""} />;
      }
      if (path === "/schedules") return <SchedulesPage key={session.session.sessionId} />;
      if (path === "/admin" || path.startsWith("/admin/")) {
        // A person who is not an administrator sees the same page as for an unknown address.
        if (session.session.role !== "admin") return <NotFoundPage />;
        return <AdminPage key={session.session.sessionId} path={path} session={session.session} />;
      }
      return <HomePage key={session.session.sessionId} session={session.session} />;
    case "error":
      return (
        <Page testId="error-page" title="Tidepool is not answering">
          <ErrorMessage message={session.message} />
          <button type="button" class="button" onClick={retry}>
            Try again
          </button>
        </Page>
      );
  }
}
