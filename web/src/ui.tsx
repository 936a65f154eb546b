// Small pieces every page uses: the page frame (title, heading, focus on navigation), form
// fields with labels and hints, and the error line.
import type { ComponentChildren, TargetedInputEvent } from "preact";
import { useEffect, useRef } from "preact/hooks";

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
