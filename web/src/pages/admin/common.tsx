// Pieces the administrator's pages share: the API call, the confirmation dialog, the table that
// scrolls inside its own box, what a list says while it loads and its "Show more" button, times
// shown in words, the directory of people (user id → e-mail) and a helper that runs calls in
// parallel with a limit.
import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { api, messageOf } from "../../api";
import { Link, useLocation } from "../../router";
import { ErrorMessage, useSubmit } from "../../ui";
import { formatTime, parseTime, relativeTime } from "./format";
import type { ListUsersResponse, User } from "./types";

export type Service = "auth" | "provisioner" | "scaler" | "audit";

/** POST /api/v1/<service>/<method>; throws ApiError (see api.ts). */
export function adminApi<T>(service: Service, method: string, body: object = {}, signal?: AbortSignal): Promise<T> {
  return api<T>(`/api/v1/${service}/${method}`, { body, signal });
}

/** Runs `task` for every item with at most `limit` running at once; failures are the task's to
 * handle (a rejected task is ignored so that the others go on). */
export async function eachLimited<T>(items: T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      try {
        await task(item);
      } catch {
        // The task reports its own failure.
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Whether a thrown value is the abort of our own AbortController. */
export function aborted(error: unknown): boolean {
  return error instanceof DOMException && error.name === "AbortError";
}

/** The current address's query (re-read on every navigation), e.g. ?owner= on Workspaces. */
export function useSearchParams(): URLSearchParams {
  useLocation();
  return new URLSearchParams(window.location.search);
}

/** The path with only the non-empty parameters: ("/x", {a: "1", b: ""}) → "/x?a=1". */
export function withQuery(path: string, parameters: Record<string, string>): string {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) if (value) query.set(name, value);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

// ---- People: user ids are shown as e-mail addresses wherever the page knows them.

/** Every person, by user id, and whether that list is complete yet. */
export class People extends Map<string, User> {
  constructor(
    readonly status: "loading" | "ready" | "failed",
    entries?: Iterable<readonly [string, User]>,
  ) {
    super(entries);
  }
}

let directoryCache = new Map<string, User>();

/** Every person (up to 5,000); loaded on mount. While it loads, the people known from the last
 * page are there already. A failure leaves the ids as they are (the pages still work). */
export function useDirectory(): People {
  const [people, setPeople] = useState(() => new People("loading", directoryCache));
  useEffect(() => {
    const controller = new AbortController();
    (async () => {
      const next = new Map<string, User>();
      let pageToken = "";
      for (let pages = 0; pages < 5; pages++) {
        const answer = await adminApi<ListUsersResponse>(
          "auth",
          "ListUsers",
          { page: { pageSize: 1000, pageToken: pageToken || undefined } },
          controller.signal,
        );
        for (const user of answer.users ?? []) if (user.userId) next.set(user.userId, user);
        pageToken = answer.page?.nextPageToken ?? "";
        if (!pageToken) break;
      }
      directoryCache = next;
      setPeople(new People("ready", next));
    })().catch((error: unknown) => {
      if (!aborted(error)) setPeople(new People("failed", directoryCache));
    });
    return () => controller.abort();
  }, []);
  return people;
}

/** A person typed as an e-mail address becomes their user id; anything else is used as it is.
 * `pending` while the people are still loading; `error` when no one, or more than one person
 * (e-mail addresses are unique among local accounts only), has that address. */
export function resolvePerson(text: string, people: People): { id: string; error: string; pending: boolean } {
  const value = text.trim();
  if (!value.includes("@")) return { id: value, error: "", pending: false };
  const lower = value.toLowerCase();
  const matches = [...people.values()].filter((user) => user.email?.toLowerCase() === lower);
  if (matches.length > 1) {
    return { id: "", error: `Several people sign in with ${value}: use the user id of the one you mean.`, pending: false };
  }
  if (people.status === "loading") return { id: "", error: "", pending: true };
  if (matches.length === 1) return { id: matches[0].userId ?? "", error: "", pending: false };
  if (people.status === "failed") {
    return { id: "", error: `The list of people could not be loaded, so ${value} cannot be looked up: use the user id instead.`, pending: false };
  }
  return { id: "", error: `No one with the e-mail address ${value} has an account.`, pending: false };
}

/** The person's e-mail (or name) when known, else their id. */
export function personName(directory: Map<string, User>, userId: string | undefined): string {
  if (!userId) return "";
  const user = directory.get(userId);
  return user?.email || user?.displayName || userId;
}

// ---- Times

/** A timestamp as "3 min ago" (near now) with the full date in a tooltip and for machines. */
export function When({ time, absolute }: { time: string | undefined; absolute?: boolean }) {
  const date = parseTime(time);
  if (!date) return <span class="muted">—</span>;
  return (
    <time dateTime={date.toISOString()} title={formatTime(date, true)}>
      {absolute ? formatTime(date, true) : relativeTime(date)}
    </time>
  );
}

// ---- Lists and tables

interface AdminTableProps {
  /** Names the table ("users": data-testid "users-table") and its caption ("users-caption"). */
  name: string;
  /** What the rows are; heard by screen readers only (the caption is visually hidden). */
  caption: string;
  /** The column headings. */
  columns: string[];
  /** The rows. */
  children: ComponentChildren;
}

/** A table that scrolls sideways inside its own box (the page itself never does). The box is
 * focusable and named by the table's caption, so keyboard users can scroll it too. */
export function AdminTable({ name, caption, columns, children }: AdminTableProps) {
  return (
    <div class="table-scroll" role="region" aria-labelledby={`${name}-caption`} tabIndex={0}>
      <table class="admin-table" data-testid={`${name}-table`}>
        <caption id={`${name}-caption`} class="visually-hidden">
          {caption}
        </caption>
        <thead>
          <tr>
            {columns.map((column) => (
              <th key={column} scope="col">
                {column}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}

interface LoadStatusProps {
  /** How far the page has come reading it (each page's Load: its data when ready). */
  load: { status: "loading" | "error" | "ready"; message?: string };
  /** Something the reading waits for (a person typed as an e-mail address being looked up):
   * counts as loading, and hides the failure of an earlier reading. */
  pending?: boolean;
  /** Said while it is read: "Loading the people…". */
  loadingText: string;
  /** Said before the server's reason when it could not be read: "The people could not be listed." */
  failureText: string;
  /** Reads it again; without it the failure is shown with no Try again button. */
  onRetry?: () => void;
}

/** What a page says about something it reads from the server: "Loading …" while it does, or
 * the failure (with Try again); nothing once it is read. */
export function LoadStatus({ load, pending, loadingText, failureText, onRetry }: LoadStatusProps) {
  const error = load.status === "error" && !pending ? `${failureText} ${load.message ?? ""}` : "";
  return (
    <>
      {(load.status === "loading" || pending) && (
        <p class="muted" role="status">
          {loadingText}
        </p>
      )}
      {error && !onRetry && <ErrorMessage message={error} />}
      {error && onRetry && (
        <div class="stack">
          <ErrorMessage message={error} />
          <button type="button" class="button" onClick={onRetry}>
            Try again
          </button>
        </div>
      )}
    </>
  );
}

/** LoadStatus for a list, then its count line: "Showing 2 people.", or that there are none. The
 * line is on the page even while empty, so that screen readers hear it when it changes. */
export function ListStatus({ count, countTestId, ...status }: LoadStatusProps & { count: string; countTestId: string }) {
  return (
    <>
      <LoadStatus {...status} />
      <p class="muted admin-count" role="status" data-testid={countTestId}>
        {count}
      </p>
    </>
  );
}

/** The buttons at the end of a filter form: `label` applies the filters, and Clear (a link to
 * `path` without them) shows while any is set. `children` go between the two. */
export function FilterActions({
  label,
  path,
  filtered,
  children,
}: {
  label: string;
  path: string;
  filtered: boolean;
  children?: ComponentChildren;
}) {
  return (
    <div class="admin-filters__actions">
      <button type="submit" class="button button--primary">
        {label}
      </button>
      {children}
      {filtered && (
        <Link class="button" href={path}>
          Clear
        </Link>
      )}
    </div>
  );
}

/** The count line of a list read a page at a time: (2, ["person", "people"], true) →
 * "Showing 2 people (more below)." */
export function showing(count: number, [one, many]: [string, string], more: boolean): string {
  return `Showing ${count} ${count === 1 ? one : many}${more ? " (more below)" : ""}.`;
}

/** The button under a list read a page at a time: `onMore` reads the next page and adds it.
 * While it does, the button says "Loading…"; a failure is shown under it, and the button
 * stays for another try. */
export function ShowMore({ label, onMore }: { label: string; onMore: () => Promise<void> }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const more = async () => {
    if (busy) return;
    setBusy(true);
    setError("");
    try {
      await onMore();
    } catch (failure) {
      setError(messageOf(failure));
    }
    setBusy(false);
  };
  return (
    <div class="admin-more">
      <button type="button" class="button" onClick={more} disabled={busy}>
        {busy ? "Loading…" : label}
      </button>
      <ErrorMessage message={error} />
    </div>
  );
}

// ---- Confirmation dialog

/** A problem with what was typed into a dialog, found before calling the server; its message
 * is shown as it is. */
export class Refusal extends Error {}

interface ConfirmDialogProps {
  /** The question, as the dialog's heading. */
  title: string;
  /** What happens, and any fields the action needs. */
  children?: ComponentChildren;
  confirmLabel: string;
  busyLabel: string;
  /** A destructive action: red confirm button and frame. */
  danger?: boolean;
  /** Puts the first focus on Cancel (for dialogs without fields). */
  focusCancel?: boolean;
  /** Does the work; a thrown error is shown in the dialog, which then stays open. */
  onConfirm: () => Promise<void>;
  /** Closes the dialog (after success, Cancel or Escape). */
  onClose: () => void;
  testId?: string;
}

/** A modal dialog (the browser's own <dialog>: focus stays inside, Escape cancels) that asks
 * before an action. The focus returns to what had it before, when that is still on the page. */
export function ConfirmDialog({
  title,
  children,
  confirmLabel,
  busyLabel,
  danger,
  focusCancel,
  onConfirm,
  onClose,
  testId,
}: ConfirmDialogProps) {
  const dialog = useRef<HTMLDialogElement>(null);
  const { busy, error, submit } = useSubmit(
    async () => {
      await onConfirm();
      onClose();
    },
    (failure) => (failure instanceof Refusal ? failure.message : messageOf(failure)),
  );
  const ids = useRef(`dialog-${Math.random().toString(36).slice(2, 10)}`);

  useEffect(() => {
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    const element = dialog.current;
    if (element && !element.open) element.showModal();
    return () => {
      if (element?.open) element.close();
      // After the page has re-rendered: the opener may have been replaced.
      window.setTimeout(() => {
        if (opener?.isConnected) opener.focus();
      }, 0);
    };
  }, []);

  const onCancel = (event: Event) => {
    // Escape: closes unless the action is under way.
    event.preventDefault();
    if (!busy) onClose();
  };

  return (
    <dialog
      ref={dialog}
      class={danger ? "dialog dialog--danger" : "dialog"}
      aria-labelledby={`${ids.current}-title`}
      onCancel={onCancel}
      data-testid={testId}
    >
      <form class="stack" onSubmit={submit} aria-busy={busy} noValidate>
        <h2 id={`${ids.current}-title`}>{title}</h2>
        {children}
        <ErrorMessage message={error} />
        <div class="dialog__actions">
          <button type="submit" class={danger ? "button button--danger-solid" : "button button--primary"} disabled={busy}>
            {busy ? busyLabel : confirmLabel}
          </button>
          <button type="button" class="button" onClick={() => !busy && onClose()} disabled={busy} autoFocus={focusCancel}>
            Cancel
          </button>
        </div>
      </form>
    </dialog>
  );
}

/** A labelled multi-line text box for a reason, with its limit in the hint. */
export function ReasonField({
  id,
  label,
  hint,
  value,
  onValue,
  required,
}: {
  id: string;
  label: string;
  hint: string;
  value: string;
  onValue: (value: string) => void;
  required?: boolean;
}) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <p class="hint" id={`${id}-hint`}>
        {hint}
      </p>
      <textarea
        id={id}
        rows={3}
        value={value}
        required={required}
        aria-describedby={`${id}-hint`}
        onInput={(event) => onValue(event.currentTarget.value)}
      />
    </div>
  );
}

/** UTF-8 length, as the server counts its limits. */
export function byteLength(text: string): number {
  return new TextEncoder().encode(text).length;
}
