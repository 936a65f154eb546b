// "/setup#tps_...": the first administrator chooses a password. The one-time token is the URL
// fragment, so it never reaches a server log; it is sent only in the POST to /auth/setup.
import { useState } from "preact/hooks";
import { api, ApiError, browserTimeZone, messageOf } from "../api";
import { navigate } from "../router";
import { ErrorMessage, Field, Page } from "../ui";

function tokenFromUrl(): string {
  return decodeURIComponent(window.location.hash.replace(/^#/, "")).trim();
}

export function SetupPage() {
  const [token] = useState(tokenFromUrl);
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");

  if (!token) {
    return (
      <Page testId="setup-page" title="Set up Tidepool">
        <p class="error" role="alert">
          This setup link is incomplete: the part after “#” is missing. Open the whole link that was printed when
          Tidepool first started.
        </p>
      </Page>
    );
  }

  const submit = async (event: Event) => {
    event.preventDefault();
    if (busy) return;
    if (password !== confirm) {
      setError("The two passwords are not the same. Type the same password in both fields.");
      return;
    }
    setBusy(true);
    setError("");
    try {
      await api("/auth/setup", { body: { setupToken: token, password, timezone: browserTimeZone() || undefined } });
      // Replace the entry, so that Back does not return to the spent link.
      navigate("/", { replace: true });
    } catch (failure) {
      const spent = failure instanceof ApiError && failure.status === 401;
      // The link is single use and expires; `tidepool up` prints a new one at every start.
      setError(spent ? `${failure.message} A new setup link is printed each time Tidepool starts, until the password is set.` : messageOf(failure));
      setBusy(false);
    }
  };

  return (
    <Page testId="setup-page" title="Set up Tidepool">
      <p>You are the first administrator. Choose the password you will sign in with.</p>
      <form class="stack" onSubmit={submit} aria-busy={busy}>
        <Field
          id="new-password"
          label="Password"
          hint="At least 12 characters."
          type="password"
          autocomplete="new-password"
          required
          value={password}
          onValue={setPassword}
        />
        <Field
          id="confirm-password"
          label="Type the password again"
          type="password"
          autocomplete="new-password"
          required
          value={confirm}
          onValue={setConfirm}
        />
        <ErrorMessage message={error} />
        <button type="submit" class="button button--primary button--wide" disabled={busy}>
          {busy ? "Setting up…" : "Set password and sign in"}
        </button>
      </form>
    </Page>
  );
}
