// Small pieces every page uses: the page frame (title, heading, focus on navigation), the page
// shown while the session is checked, form fields with labels and hints, a form's submission,
// the error line, and the card that says how the person's workspace is getting ready.
import type { ComponentChildren, TargetedInputEvent } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { messageOf, type Workspace } from "./api";
import { describe } from "./workspace";

let firstPage = true;

interface PageProps {
  testId: string;
  title: string;
  /** Shown instead of the title as the <h1> when given. */
  heading?: string;
  wide?: boolean;
  children?: ComponentChildren;
}

/** One page: a <main> with a stable data-testid and its <h1>, which takes the focus when the
 * page was reached by navigation (so screen readers announce the new page). */
export function Page({ testId, title, heading, wide, children }: PageProps) {
  const h1 = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · Tidepool`;
    if (firstPage) firstPage = false;
    else h1.current?.focus();
  }, [title]);
  return (
    <main id="main" class={wide ? "page page--wide" : "page"} data-testid={testId}>
      <h1 ref={h1} tabIndex={-1}>
        {heading ?? title}
      </h1>
      {children}
    </main>
  );
}

/** The whole page while something it needs is on its way (the session, a redirect). */
export function LoadingPage() {
  return (
    <main id="main" class="page" aria-busy="true">
      <p class="muted" role="status">
        Loading…
      </p>
    </main>
  );
}

/** The error line: announced at once, and empty (not rendered) when there is no error. */
export function ErrorMessage({ message }: { message: string }) {
  if (!message) return null;
  return (
    <p class="error" role="alert">
      {message}
    </p>
  );
}

interface FieldProps {
  id: string;
  label: string;
  hint?: string;
  type?: "text" | "email" | "password";
  autocomplete?: string;
  required?: boolean;
  spellcheck?: boolean;
  value: string;
  onValue: (value: string) => void;
}

/** A labelled input; the hint, if any, is tied to it with aria-describedby. */
export function Field({ id, label, hint, type = "text", autocomplete, required, spellcheck, value, onValue }: FieldProps) {
  const hintId = hint ? `${id}-hint` : undefined;
  const common = {
    id,
    value,
    autocomplete,
    required,
    spellcheck,
    "aria-describedby": hintId,
    onInput: (event: TargetedInputEvent<HTMLInputElement>) => onValue(event.currentTarget.value),
  };
  // Preact's types tie each input type to its own attributes, so each type is spelled out.
  const input =
    type === "password" ? <input type="password" {...common} /> : type === "email" ? <input type="email" {...common} /> : <input type="text" {...common} />;
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {hint && (
        <p class="hint" id={hintId}>
          {hint}
        </p>
      )}
      {input}
    </div>
  );
}

interface SelectFieldProps {
  id: string;
  label: string;
  value: string;
  /** The choices in order; a value of "" stands for "no choice" (e.g. "Any role"). */
  options: { value: string; label: string }[];
  onValue: (value: string) => void;
}

/** A labelled drop-down list. */
export function SelectField({ id, label, value, options, onValue }: SelectFieldProps) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(event) => onValue(event.currentTarget.value)}>
        {options.map((option) => (
          <option key={option.value} value={option.value}>
            {option.label}
          </option>
        ))}
      </select>
    </div>
  );
}

/** The submission of a form that goes away once it succeeds (the page changes or the dialog
 * closes): `submit` runs `action` unless it runs already, and `busy` stays true after a
 * success. A failure becomes `error` (worded by `explain`) and the form can be sent again. */
export function useSubmit(
  action: () => Promise<void>,
  explain: (failure: unknown) => string = messageOf,
): { busy: boolean; error: string; submit: (event: Event) => Promise<void> } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const submit = async (event: Event) => {
    event.preventDefault();
    if (busy) return;
    setBusy(true);
    setError("");
    try {
      await action();
    } catch (failure) {
      setError(explain(failure));
      setBusy(false);
    }
  };
  return { busy, error, submit };
}

interface WorkspaceWaitProps {
  /** What useWorkspace (workspace.ts) reports. */
  workspace: Workspace | undefined;
  waking: boolean;
  stopped: boolean;
  /** Starts over (a new attempt of useWorkspace). */
  onRetry: () => void;
}

/** The card a page shows until the person's workspace runs: its state in words, and Try again
 * once the waiting has stopped on a failure. */
export function WorkspaceWait({ workspace, waking, stopped, onRetry }: WorkspaceWaitProps) {
  const { label, busy } = describe(workspace, waking, stopped);
  return (
    <div class="card">
      <p class="state-line" role="status" aria-busy={busy}>
        Workspace: {label}
      </p>
      {stopped && (
        <button type="button" class="button" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}
