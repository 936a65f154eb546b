// "/" without a session: one button per federated provider (a full navigation to
// /auth/start/<id>), the e-mail and password form when local accounts are enabled, and an
// invite-code field when the deployment requires invites.
import { useEffect, useState } from "preact/hooks";
import { api, browserTimeZone, messageOf, type ListProvidersResponse, type Provider } from "../api";
import { navigate } from "../router";
import { ErrorMessage, Field, Page, useSubmit } from "../ui";

const LOCAL = "PROVIDER_KIND_LOCAL";

type Providers =
  | { status: "loading" }
  | { status: "error"; message: string }
  | { status: "ready"; federated: Provider[]; local: boolean; inviteRequired: boolean };

/** `returnPath`: the page of this app to come back to once signed in ("/" or "/keys"). */
export function SignInPage({ returnPath = "/" }: { returnPath?: string }) {
  const [providers, setProviders] = useState<Providers>({ status: "loading" });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const controller = new AbortController();
    setProviders({ status: "loading" });
    api<ListProvidersResponse>("/auth/providers", { signal: controller.signal })
      .then((answer) => {
        const all = (answer.providers ?? []).filter((p) => p.providerId);
        setProviders({
          status: "ready",
          federated: all.filter((p) => p.kind !== LOCAL),
          local: all.some((p) => p.kind === LOCAL),
          inviteRequired: answer.inviteRequired === true,
        });
      })
      .catch((error: unknown) => {
        if (!controller.signal.aborted) setProviders({ status: "error", message: messageOf(error) });
      });
    return () => controller.abort();
  }, [attempt]);

  return (
    <Page testId="signin-page" title="Sign in" heading="Sign in to Tidepool">
      {providers.status === "loading" && (
        <p class="muted" role="status">
          Loading the ways to sign in…
        </p>
      )}
      {providers.status === "error" && (
        <>
          <ErrorMessage message={providers.message} />
          <button type="button" onClick={() => setAttempt(attempt + 1)}>
            Try again
          </button>
        </>
      )}
      {providers.status === "ready" && <SignInOptions {...providers} returnPath={returnPath} />}
    </Page>
  );
}

interface SignInOptionsProps {
  federated: Provider[];
  local: boolean;
  inviteRequired: boolean;
  returnPath: string;
}

function SignInOptions({ federated, local, inviteRequired, returnPath }: SignInOptionsProps) {
  const [invite, setInvite] = useState("");
  const showInvite = inviteRequired && federated.length > 0;

  if (federated.length === 0 && !local) {
    return <p>No way to sign in is enabled on this server. Ask your administrator.</p>;
  }

  const start = (provider: Provider) => {
    const query = new URLSearchParams({ return_path: returnPath, timezone: browserTimeZone() });
    if (showInvite && invite.trim()) query.set("invite", invite.trim());
    window.location.assign(`/auth/start/${encodeURIComponent(provider.providerId ?? "")}?${query.toString()}`);
  };

  // The order of ListProviders (docs/configuration.md): local accounts first, then the
  // federated providers in configuration order.
  return (
    <>
      {local && <PasswordForm returnPath={returnPath} />}
      {federated.length > 0 && local && <p class="divider">or</p>}
      {federated.length > 0 && (
        <div class="stack">
          {showInvite && (
            <Field
              id="invite"
              label="Invite code"
              hint="Needed only the first time you sign in with one of the buttons below."
              value={invite}
              onValue={setInvite}
              autocomplete="off"
              spellcheck={false}
            />
          )}
          <ul class="providers">
            {federated.map((provider) => (
              <li key={provider.providerId}>
                <button type="button" class="button button--wide" onClick={() => start(provider)}>
                  {provider.displayName || `Sign in with ${provider.providerId}`}
                </button>
              </li>
            ))}
          </ul>
        </div>
      )}
    </>
  );
}

function PasswordForm({ returnPath }: { returnPath: string }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const { busy, error, submit } = useSubmit(async () => {
    await api("/auth/password", { body: { email: email.trim(), password, timezone: browserTimeZone() || undefined } });
    navigate(returnPath, { replace: true });
  });

  return (
    <form class="stack" onSubmit={submit} aria-busy={busy}>
      <Field id="email" label="E-mail" type="email" autocomplete="username" required value={email} onValue={setEmail} />
      <Field
        id="password"
        label="Password"
        type="password"
        autocomplete="current-password"
        required
        value={password}
        onValue={setPassword}
      />
      <ErrorMessage message={error} />
      <button type="submit" class="button button--primary button--wide" disabled={busy}>
        {busy ? "Signing in…" : "Sign in"}
      </button>
    </form>
  );
}
