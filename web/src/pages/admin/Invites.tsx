// "/admin/invites": create an invite (CreateInvite: how many people may use it, for how long,
// optionally only for one e-mail address or one domain, with a note), whose code is shown
// once — with copy buttons and the sign-in address — and never again; the invites so far
// (ListInvites, newest first, 50 at a time, filterable by state), each revocable after a
// confirmation (RevokeInvite).
import { useEffect, useRef, useState } from "preact/hooks";
import type { TargetedEvent } from "preact";
import { api, messageOf, type ListProvidersResponse } from "../../api";
import { ErrorMessage, SelectField } from "../../ui";
import { AdminFrame } from "./Frame";
import {
  aborted,
  AdminTable,
  adminApi,
  byteLength,
  ConfirmDialog,
  ListStatus,
  personName,
  ShowMore,
  showing,
  useDirectory,
  When,
} from "./common";
import { inviteStateLabel } from "./format";
import type {
  CreateInviteRequest,
  CreateInviteResponse,
  Invite,
  InviteState,
  ListInvitesResponse,
  RevokeInviteResponse,
} from "./types";

const PAGE_SIZE = 50;
const DAY_MS = 86_400_000;
/** How long a new invite is valid, in days. */
const VALIDITY = [
  { value: "1", label: "1 day" },
  { value: "3", label: "3 days" },
  { value: "7", label: "7 days" },
  { value: "30", label: "30 days" },
  { value: "90", label: "90 days (the longest)" },
];
const STATES = [
  { value: "", label: "All invites" },
  { value: "INVITE_STATE_ACTIVE", label: "Active" },
  { value: "INVITE_STATE_USED_UP", label: "Used up" },
  { value: "INVITE_STATE_EXPIRED", label: "Expired" },
  { value: "INVITE_STATE_REVOKED", label: "Revoked" },
];
const COLUMNS = ["Invite", "Who may use it", "Used", "State", "Created", "Expires", "Actions"];

type Load =
  | { status: "loading" }
  | { status: "error"; message: string }
  | { status: "ready"; invites: Invite[]; nextPageToken: string };

export function InvitesPage({ path }: { path: string }) {
  const directory = useDirectory();
  const [stateFilter, setStateFilter] = useState<InviteState | "">("");
  const [load, setLoad] = useState<Load>({ status: "loading" });
  const [attempt, setAttempt] = useState(0);
  const [created, setCreated] = useState<{ code: string; invite: Invite } | null>(null);
  const [revoking, setRevoking] = useState<Invite | null>(null);
  const [notice, setNotice] = useState("");
  const [inviteRequired, setInviteRequired] = useState<boolean | undefined>(undefined);

  useEffect(() => {
    const controller = new AbortController();
    api<ListProvidersResponse>("/auth/providers", { signal: controller.signal })
      .then((answer) => setInviteRequired(answer.inviteRequired === true))
      .catch(() => {
        // Only a hint is lost.
      });
    return () => controller.abort();
  }, []);

  useEffect(() => {
    const controller = new AbortController();
    setLoad({ status: "loading" });
    adminApi<ListInvitesResponse>(
      "auth",
      "ListInvites",
      { state: stateFilter || undefined, page: { pageSize: PAGE_SIZE } },
      controller.signal,
    )
      .then((answer) =>
        setLoad({ status: "ready", invites: answer.invites ?? [], nextPageToken: answer.page?.nextPageToken ?? "" }),
      )
      .catch((error: unknown) => {
        if (!aborted(error)) setLoad({ status: "error", message: messageOf(error) });
      });
    return () => controller.abort();
  }, [stateFilter, attempt]);

  const showMore = async () => {
    if (load.status !== "ready" || !load.nextPageToken) return;
    const answer = await adminApi<ListInvitesResponse>("auth", "ListInvites", {
      state: stateFilter || undefined,
      page: { pageSize: PAGE_SIZE, pageToken: load.nextPageToken },
    });
    setLoad({
      status: "ready",
      invites: [...load.invites, ...(answer.invites ?? [])],
      nextPageToken: answer.page?.nextPageToken ?? "",
    });
  };

  const count =
    load.status !== "ready"
      ? ""
      : load.invites.length === 0
        ? stateFilter
          ? `No invite is ${inviteStateLabel(stateFilter).toLowerCase()}.`
          : "No invites yet. Create one above."
        : showing(load.invites.length, ["invite", "invites"], Boolean(load.nextPageToken));

  return (
    <AdminFrame path={path} testId="admin-invites-page" title="Invites">
      {inviteRequired === false && (
        <p class="muted">
          This server does not ask for invites right now: anyone a sign-in provider lets in gets an account. Invites matter
          once <code>auth.invite_required</code> is on.
        </p>
      )}
      {inviteRequired === true && (
        <p class="muted">New people need an invite code the first time they sign in with a provider.</p>
      )}

      {created ? (
        <CreatedInvite code={created.code} invite={created.invite} onDone={() => setCreated(null)} />
      ) : (
        <CreateForm
          onCreated={(answer) => {
            setNotice("");
            if (answer.code && answer.invite) setCreated({ code: answer.code, invite: answer.invite });
            setAttempt((n) => n + 1);
          }}
        />
      )}

      <section class="admin-section" aria-labelledby="invites-heading">
        <h2 id="invites-heading">Invites so far</h2>
        <div class="admin-filters">
          <SelectField
            id="invite-state"
            label="Show"
            value={stateFilter}
            options={STATES}
            onValue={(value) => setStateFilter(value as InviteState | "")}
          />
        </div>
        <p class="notice" role="status" data-testid="invites-notice">
          {notice}
        </p>
        <ListStatus
          load={load}
          loadingText="Loading the invites…"
          failureText="The invites could not be listed."
          onRetry={() => setAttempt(attempt + 1)}
          count={count}
          countTestId="invites-count"
        />
        {load.status === "ready" && load.invites.length > 0 && (
          <AdminTable name="invites" caption="Invites, newest first" columns={COLUMNS}>
            {load.invites.map((invite) => (
              <tr
                key={invite.inviteId}
                data-testid="invite-row"
                data-invite-id={invite.inviteId}
                data-state={invite.state}
              >
                <th scope="row" class="admin-table__main">
                  <span class="admin-strong">{invite.note || "No note"}</span>
                  <span class="admin-sub admin-mono">{invite.inviteId}</span>
                  {invite.codeFingerprint && (
                    <span class="admin-sub">
                      Code fingerprint <span class="admin-mono">{invite.codeFingerprint}</span>
                    </span>
                  )}
                </th>
                <td>
                  {invite.boundEmail
                    ? `Only ${invite.boundEmail}`
                    : invite.boundDomain
                      ? `Anyone at ${invite.boundDomain}`
                      : "Anyone with the code"}
                </td>
                <td>
                  {invite.useCount ?? 0} of {invite.maxUses ?? 1}
                </td>
                <td>
                  <span
                    class={`status-pill ${invite.state === "INVITE_STATE_ACTIVE" ? "status-pill--good" : "status-pill--neutral"}`}
                    data-testid="invite-state"
                  >
                    {inviteStateLabel(invite.state)}
                  </span>
                </td>
                <td>
                  <When time={invite.createTime} />
                  <span class="admin-sub">
                    by {invite.createdByUserId ? personName(directory, invite.createdByUserId) : "the command line"}
                  </span>
                </td>
                <td>
                  <When time={invite.expireTime} />
                </td>
                <td>
                  {invite.state === "INVITE_STATE_ACTIVE" ? (
                    <button
                      type="button"
                      class="button button--small button--danger"
                      onClick={() => {
                        setNotice("");
                        setRevoking(invite);
                      }}
                    >
                      Revoke<span class="visually-hidden"> the invite {invite.note || invite.inviteId}</span>
                    </button>
                  ) : (
                    <span class="muted">—</span>
                  )}
                </td>
              </tr>
            ))}
          </AdminTable>
        )}
        {load.status === "ready" && load.nextPageToken && <ShowMore label="Show more invites" onMore={showMore} />}
      </section>

      {revoking && (
        <ConfirmDialog
          title="Revoke this invite?"
          confirmLabel="Revoke"
          busyLabel="Revoking…"
          danger
          focusCancel
          testId="revoke-dialog"
          onClose={() => setRevoking(null)}
          onConfirm={async () => {
            const answer = await adminApi<RevokeInviteResponse>("auth", "RevokeInvite", { inviteId: revoking.inviteId });
            const updated = answer.invite;
            if (updated?.inviteId) {
              setLoad((previous) =>
                previous.status === "ready"
                  ? { ...previous, invites: previous.invites.map((i) => (i.inviteId === updated.inviteId ? updated : i)) }
                  : previous,
              );
            }
            setNotice(`The invite ${revoking.note ? `“${revoking.note}”` : revoking.inviteId} is revoked.`);
          }}
        >
          <p>
            {revoking.note ? `“${revoking.note}”: ` : ""}nobody can use its code from now on. Accounts already made with it
            stay as they are.
          </p>
        </ConfirmDialog>
      )}
    </AdminFrame>
  );
}

type Binding = "anyone" | "email" | "domain";

function CreateForm({ onCreated }: { onCreated: (answer: CreateInviteResponse) => void }) {
  const [maxUses, setMaxUses] = useState("1");
  const [days, setDays] = useState("7");
  const [binding, setBinding] = useState<Binding>("anyone");
  const [bound, setBound] = useState("");
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");

  const submit = async (event: TargetedEvent<HTMLFormElement, Event>) => {
    event.preventDefault();
    if (busy) return;
    const uses = Number(maxUses);
    const target = bound.trim();
    const problem = !Number.isInteger(uses) || uses < 1 || uses > 10000
      ? "The number of people must be a whole number from 1 to 10,000."
      : binding !== "anyone" && !target
        ? binding === "email"
          ? "Type the e-mail address the invite is for."
          : "Type the domain the invite is for, such as example.com."
        : byteLength(note.trim()) > 256
          ? "The note is too long: keep it under 250 characters."
          : "";
    if (problem) {
      setError(problem);
      return;
    }
    setError("");
    setBusy(true);
    const request: CreateInviteRequest = {
      maxUses: uses,
      expireTime: new Date(Date.now() + Number(days) * DAY_MS).toISOString(),
      note: note.trim() || undefined,
    };
    if (binding === "email") request.boundEmail = target;
    if (binding === "domain") request.boundDomain = target.replace(/^@/, "");
    try {
      const answer = await adminApi<CreateInviteResponse>("auth", "CreateInvite", request);
      setNote("");
      setBound("");
      onCreated(answer);
    } catch (failure) {
      setError(`The invite was not created. ${messageOf(failure)}`);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="card admin-section admin-narrow" aria-labelledby="create-invite-heading">
      <h2 id="create-invite-heading">Create an invite</h2>
      <form class="stack" onSubmit={submit} aria-busy={busy} noValidate>
        <div class="admin-form-row">
          <div class="field">
            <label for="invite-uses">How many people may use it</label>
            <input
              id="invite-uses"
              type="number"
              inputMode="numeric"
              min={1}
              max={10000}
              step={1}
              value={maxUses}
              onInput={(event) => setMaxUses(event.currentTarget.value)}
            />
          </div>
          <SelectField id="invite-days" label="Valid for" value={days} options={VALIDITY} onValue={setDays} />
        </div>
        <fieldset class="admin-fieldset">
          <legend>Who may use it</legend>
          <label class="admin-choice">
            <input type="radio" name="invite-binding" checked={binding === "anyone"} onChange={() => setBinding("anyone")} />
            Anyone with the code
          </label>
          <label class="admin-choice">
            <input type="radio" name="invite-binding" checked={binding === "email"} onChange={() => setBinding("email")} />
            Only one e-mail address
          </label>
          <label class="admin-choice">
            <input type="radio" name="invite-binding" checked={binding === "domain"} onChange={() => setBinding("domain")} />
            Anyone with an e-mail address in one domain
          </label>
          {binding !== "anyone" && (
            <div class="field">
              <label for="invite-bound">{binding === "email" ? "E-mail address" : "Domain"}</label>
              <p class="hint" id="invite-bound-hint">
                {binding === "email"
                  ? "The provider must confirm this address when they sign in."
                  : "For example corp.example. The provider must confirm their address."}
              </p>
              <input
                id="invite-bound"
                type="text"
                inputMode={binding === "email" ? "email" : "text"}
                value={bound}
                autocomplete="off"
                spellcheck={false}
                aria-describedby="invite-bound-hint"
                onInput={(event) => setBound(event.currentTarget.value)}
              />
            </div>
          )}
        </fieldset>
        <div class="field">
          <label for="invite-note">Note (optional)</label>
          <p class="hint" id="invite-note-hint">
            Only administrators see it, e.g. who it is for.
          </p>
          <input
            id="invite-note"
            type="text"
            value={note}
            maxLength={256}
            aria-describedby="invite-note-hint"
            onInput={(event) => setNote(event.currentTarget.value)}
          />
        </div>
        <ErrorMessage message={error} />
        <div>
          <button type="submit" class="button button--primary" disabled={busy}>
            {busy ? "Creating…" : "Create invite"}
          </button>
        </div>
      </form>
    </section>
  );
}

/** The new code, shown this once: copy buttons for the code and for a ready-made message. */
function CreatedInvite({ code, invite, onDone }: { code: string; invite: Invite; onDone: () => void }) {
  const heading = useRef<HTMLHeadingElement>(null);
  const codeInput = useRef<HTMLInputElement>(null);
  const [copied, setCopied] = useState("");
  const address = `${window.location.origin}/`;
  const message = `Sign in to Tidepool at ${address} and enter the invite code ${code} the first time you sign in.`;

  useEffect(() => heading.current?.focus(), []);

  const copy = async (text: string, what: string) => {
    try {
      await navigator.clipboard.writeText(text);
      setCopied(`${what} copied.`);
    } catch {
      // No clipboard access: select the code so that it can be copied by hand.
      codeInput.current?.select();
      setCopied("Copying did not work here: the code is selected, copy it with your keyboard.");
    }
  };

  return (
    <section class="card admin-section admin-narrow admin-created" aria-labelledby="created-heading" data-testid="invite-created">
      <h2 id="created-heading" ref={heading} tabIndex={-1}>
        Invite created
      </h2>
      <p>
        <strong>Copy the code now: it is shown only this once.</strong> Tidepool keeps only a fingerprint of it and cannot
        show it again.
      </p>
      <div class="field">
        <label for="invite-code">Invite code</label>
        <div class="admin-copy">
          <input
            id="invite-code"
            ref={codeInput}
            type="text"
            class="admin-mono"
            readOnly
            value={code}
            data-testid="invite-code"
            onFocus={(event) => event.currentTarget.select()}
          />
          <button type="button" class="button button--primary" onClick={() => copy(code, "The code is")}>
            Copy code
          </button>
        </div>
      </div>
      <p>
        Sign-in address: <a href={address}>{address}</a>
        {invite.boundEmail ? ` (only for ${invite.boundEmail})` : invite.boundDomain ? ` (only for ${invite.boundDomain})` : ""}
      </p>
      <div class="admin-actions">
        <button type="button" class="button" onClick={() => copy(message, "A message with the address and the code is")}>
          Copy a message to send
        </button>
        <button type="button" class="button" onClick={onDone}>
          Done, create another
        </button>
      </div>
      <p class="notice" role="status" data-testid="copy-status">
        {copied}
      </p>
    </section>
  );
}
