// The app's frame and routes. "/" shows the sign-in page or the workspace home, "/terminal" and
// "/keys" the sign-in page or the terminal or keys page, depending on GET /auth/session (checked
// again on every navigation to any of them). Signed in, the top bar carries the navigation
// (Home, Files, Terminal, Keys).
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, csrfToken, messageOf, setUnauthorizedHandler, type Session } from "./api";
import { FilesPage } from "./pages/Files";
import { HomePage } from "./pages/Home";
import { KeysPage } from "./pages/Keys";
import { NotFoundPage } from "./pages/NotFound";
import { SetupPage } from "./pages/Setup";
import { SignInPage } from "./pages/SignIn";
import { TerminalPage } from "./pages/Terminal";
import { Link, navigate, useLocation, type Location } from "./router";
import { ErrorMessage, Page } from "./ui";

/** The pages that need a session; signed out, they show the sign-in page and come back after. */
const SIGNED_IN_PATHS = new Set(["/", "/files", "/terminal", "/keys"]);

/** The top navigation, shown when signed in. */
const NAVIGATION = [
  { href: "/", label: "Home" },
  { href: "/files", label: "Files" },
  { href: "/terminal", label: "Terminal" },
  { href: "/keys", label: "Keys" },
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
      if (!SIGNED_IN_PATHS.has(window.location.pathname)) navigate("/");
    });
  }, []);

  const guarded = SIGNED_IN_PATHS.has(location.path);
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
              {NAVIGATION.map(({ href, label }) => (
                <li key={href}>
                  <Link href={href} aria-current={location.path === href ? "page" : undefined}>
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

function route({ path, key }: Location, session: SessionState, retry: () => void) {
  // Keyed by the navigation, so that the setup page reads the link's token again.
  if (path === "/setup") return <SetupPage key={key} />;
  if (!SIGNED_IN_PATHS.has(path)) return <NotFoundPage />;
  switch (session.status) {
    case "loading":
      return (
        <main id="main" class="page" aria-busy="true">
          <p class="muted" role="status">
            Loading…
          </p>
        </main>
      );
    case "signed-out":
      return <SignInPage returnPath={path} />;
    case "signed-in":
      if (path === "/keys") return <KeysPage key={session.session.sessionId} />;
      if (path === "/files") return <FilesPage key={session.session.sessionId} />;
      if (path === "/terminal") return <TerminalPage key={session.session.sessionId} />;
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
