// "/keys": the person's own keys (bring your own key). The provider catalogue (GetCatalogue),
// grouped by category, with each field's stored state from List (metadata only, never values).
// A value is write-only: it is typed into a password input, sent once with Put, and the input is
// cleared; nothing on this page can show it again. Delete asks for a confirmation in the page.
import { useEffect, useRef, useState } from "preact/hooks";
import type { TargetedEvent, TargetedInputEvent } from "preact";
import {
  api,
  ApiError,
  messageOf,
  type DeleteSecretResponse,
  type GetCatalogueResponse,
  type KeyField,
  type KeyProvider,
  type ListSecretsResponse,
  type ProviderCategory,
  type PutSecretResponse,
  type SecretMetadata,
} from "../api";
import { ErrorMessage, Page } from "../ui";

const CATEGORIES: { category: ProviderCategory | "other"; id: string; title: string; intro: string }[] = [
  {
    category: "PROVIDER_CATEGORY_AI_MODEL",
    id: "ai-models",
    title: "AI models",
    intro: "Your agent uses the shared model server until you add a key of your own.",
  },
  { category: "PROVIDER_CATEGORY_WEB_SEARCH", id: "web-search", title: "Web search", intro: "Let your agent search the web." },
  { category: "PROVIDER_CATEGORY_MESSAGING", id: "messaging", title: "Messaging", intro: "Talk to your agent from a chat app." },
  {
    category: "PROVIDER_CATEGORY_DEVELOPER",
    id: "developer",
    title: "Developer tools",
    intro: "Let your agent and coding tools work with your repositories.",
  },
  { category: "other", id: "other", title: "Other", intro: "" },
];

const secretsApi = <T,>(method: string, body: object, signal?: AbortSignal) =>
  api<T>(`/api/v1/secrets/${method}`, { body, signal });

const slot = (providerId: string, fieldId: string) => `${providerId}\u0000${fieldId}`;

type Stored = Map<string, SecretMetadata>;

interface Listing {
  stored: Stored;
  capabilities: Set<string>;
}

function listingOf(answer: ListSecretsResponse): Listing {
  const stored: Stored = new Map();
  for (const secret of answer.secrets ?? []) {
    if (secret.providerId && secret.fieldId) stored.set(slot(secret.providerId, secret.fieldId), secret);
  }
  return { stored, capabilities: new Set(answer.capabilities ?? []) };
}

type Load =
  | { status: "loading" }
  | { status: "error"; message: string }
  | { status: "ready"; providers: KeyProvider[] };

export function KeysPage() {
  const [load, setLoad] = useState<Load>({ status: "loading" });
  const [listing, setListing] = useState<Listing>({ stored: new Map(), capabilities: new Set() });
  const [attempt, setAttempt] = useState(0);
  const refreshes = useRef<AbortController | null>(null);

  useEffect(() => {
    const controller = new AbortController();
    setLoad({ status: "loading" });
    Promise.all([
      secretsApi<GetCatalogueResponse>("GetCatalogue", {}, controller.signal),
      secretsApi<ListSecretsResponse>("List", {}, controller.signal),
    ])
      .then(([catalogue, list]) => {
        setListing(listingOf(list));
        const providers = (catalogue.providers ?? []).filter((p) => p.providerId && (p.fields ?? []).some((f) => f.fieldId));
        setLoad({ status: "ready", providers });
      })
      .catch((error: unknown) => {
        if (!controller.signal.aborted) setLoad({ status: "error", message: messageOf(error) });
      });
    return () => {
      controller.abort();
      refreshes.current?.abort();
    };
  }, [attempt]);

  // After a change: the answer of Put or Delete is applied at once; List then brings the
  // capabilities (which providers are complete). A failed refresh changes nothing shown.
  const refresh = () => {
    refreshes.current?.abort();
    const controller = new AbortController();
    refreshes.current = controller;
    secretsApi<ListSecretsResponse>("List", {}, controller.signal)
      .then((list) => {
        if (!controller.signal.aborted) setListing(listingOf(list));
      })
      .catch(() => {});
  };

  const stored = (secret: SecretMetadata) => {
    if (!secret.providerId || !secret.fieldId) return;
    setListing((previous) => {
      const next = new Map(previous.stored);
      next.set(slot(secret.providerId ?? "", secret.fieldId ?? ""), secret);
      return { ...previous, stored: next };
    });
    refresh();
  };

  const deleted = (providerId: string, fieldId: string) => {
    setListing((previous) => {
      const next = new Map(previous.stored);
      next.delete(slot(providerId, fieldId));
      return { ...previous, stored: next };
    });
    refresh();
  };

  return (
    <Page testId="keys-page" title="Your keys" wide>
      <p>
        Add your own keys to give your agent more models, web search, chat apps and GitHub. Each value is write-only: once
        saved it is never shown again, here or anywhere else. To change a key, save a new value; to stop using it, delete
        it.
      </p>
      {load.status === "loading" && (
        <p class="muted" role="status">
          Loading the providers…
        </p>
      )}
      {load.status === "error" && (
        <div class="stack">
          <ErrorMessage message={load.message} />
          <button type="button" class="button" onClick={() => setAttempt(attempt + 1)}>
            Try again
          </button>
        </div>
      )}
      {load.status === "ready" && load.providers.length === 0 && <p>No providers are available on this server.</p>}
      {load.status === "ready" &&
        CATEGORIES.map(({ category, id, title, intro }) => {
          const known = new Set<string>(CATEGORIES.map((c) => c.category));
          const providers = load.providers.filter((p) =>
            category === "other" ? !known.has(p.category ?? "") : p.category === category,
          );
          if (providers.length === 0) return null;
          return (
            <section key={id} class="key-category" aria-labelledby={`category-${id}`}>
              <h2 id={`category-${id}`}>{title}</h2>
              {intro && <p class="muted">{intro}</p>}
              <div class="key-providers">
                {providers.map((provider) => (
                  <ProviderCard
                    key={provider.providerId}
                    provider={provider}
                    listing={listing}
                    onStored={stored}
                    onDeleted={deleted}
                  />
                ))}
              </div>
            </section>
          );
        })}
    </Page>
  );
}

/** "a", "a and b", "a, b and c" */
function listed(names: string[]): string {
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

function safeDocsUrl(url: string | undefined): string | undefined {
  return url && /^https:\/\/[^\s]+$/i.test(url) ? url : undefined;
}

interface ProviderCardProps {
  provider: KeyProvider;
  listing: Listing;
  onStored: (secret: SecretMetadata) => void;
  onDeleted: (providerId: string, fieldId: string) => void;
}

function ProviderCard({ provider, listing, onStored, onDeleted }: ProviderCardProps) {
  const providerId = provider.providerId ?? "";
  const name = provider.displayName || providerId;
  const fields = (provider.fields ?? []).filter((f) => f.fieldId);
  const unlocked = !!provider.capability && listing.capabilities.has(provider.capability);
  const missing = fields.filter((f) => f.required && !listing.stored.has(slot(providerId, f.fieldId ?? "")));
  const what = provider.capabilityDisplayName || provider.capability || "";
  const docs = safeDocsUrl(provider.docsUrl);
  const headingId = `provider-${providerId}-heading`;

  return (
    <section class="card key-provider" data-testid={`provider-${providerId}`} aria-labelledby={headingId}>
      <div class="key-provider__head">
        <h3 id={headingId}>{name}</h3>
        {unlocked && <span class="pill">Unlocked</span>}
      </div>
      {provider.description && <p>{provider.description}</p>}
      {what &&
        (unlocked ? (
          <p>
            Your {fields.length === 1 ? "key unlocks" : "keys unlock"} <strong>{what}</strong>.
          </p>
        ) : (
          <p>
            Unlocks <strong>{what}</strong>
            {missing.length > 0 ? ` once you save the ${listed(missing.map((f) => f.displayName || f.fieldId || ""))}.` : "."}
          </p>
        ))}
      {docs && (
        <p>
          <a href={docs} rel="noopener noreferrer">
            Where to get your {name} {listed(fields.map((f) => f.displayName || f.fieldId || ""))}
          </a>
        </p>
      )}
      {fields.map((field) => (
        <FieldRow
          key={field.fieldId}
          provider={provider}
          field={field}
          secret={listing.stored.get(slot(providerId, field.fieldId ?? ""))}
          onStored={onStored}
          onDeleted={onDeleted}
        />
      ))}
    </section>
  );
}

const timeFormat = (() => {
  try {
    return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  } catch {
    return undefined;
  }
})();

/** An RFC 3339 timestamp (possibly with nanoseconds) as a Date, or undefined. */
function parseTime(text: string | undefined): Date | undefined {
  if (!text) return undefined;
  const date = new Date(text.replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(date.getTime()) ? undefined : date;
}

function formatTime(date: Date): string {
  return timeFormat ? timeFormat.format(date) : date.toISOString();
}

interface FieldRowProps {
  provider: KeyProvider;
  field: KeyField;
  secret: SecretMetadata | undefined;
  onStored: (secret: SecretMetadata) => void;
  onDeleted: (providerId: string, fieldId: string) => void;
}

function FieldRow({ provider, field, secret, onStored, onDeleted }: FieldRowProps) {
  const providerId = provider.providerId ?? "";
  const fieldId = field.fieldId ?? "";
  const fieldName = field.displayName || fieldId;
  const fullName = `${provider.displayName || providerId} ${fieldName}`;
  const base = `key-${providerId}-${fieldId}`;
  const isUrl = field.kind === "FIELD_KIND_URL";

  const [value, setValue] = useState("");
  const [busy, setBusy] = useState<"" | "saving" | "deleting">("");
  const [error, setError] = useState("");
  const [notice, setNotice] = useState("");
  const [confirming, setConfirming] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  const deleteButton = useRef<HTMLButtonElement>(null);
  const question = useRef<HTMLParagraphElement>(null);
  // Where the focus goes after the confirmation step opens or closes.
  const focusNext = useRef<"" | "question" | "delete" | "input">("");

  useEffect(() => {
    const target = focusNext.current;
    focusNext.current = "";
    if (target === "question") question.current?.focus();
    else if (target === "delete") deleteButton.current?.focus();
    else if (target === "input") input.current?.focus();
  });

  const updated = parseTime(secret?.updateTime || secret?.createTime);

  /** The server names a field "the value of openai.api_key"; say "the OpenAI API key". */
  const plain = (message: string) =>
    message.replace(new RegExp(`the value of ${providerId}\\.${fieldId}`, "gi"), (match) =>
      match.charAt(0) === "T" ? `The ${fullName}` : `the ${fullName}`,
    );

  const save = async (event: TargetedEvent<HTMLFormElement, Event>) => {
    event.preventDefault();
    if (busy) return;
    setNotice("");
    // Pasted keys often carry a line break or spaces around them; they are never part of a key.
    const trimmed = value.trim();
    if (!trimmed) {
      setError(`Type or paste the ${fieldName} first.`);
      input.current?.focus();
      return;
    }
    setError("");
    setBusy("saving");
    try {
      const answer = await secretsApi<PutSecretResponse>("Put", { providerId, fieldId, value: trimmed });
      setValue("");
      setConfirming(false);
      if (answer.secret) onStored(answer.secret);
      setNotice(
        `Saved. The ${fieldName} is stored and will not be shown again. ${
          answer.appliesWithoutRestart ? "Your agent uses it right away." : "Your agent restarts to pick it up."
        }`,
      );
    } catch (failure) {
      setError(`The ${fieldName} was not saved. ${plain(messageOf(failure))}`);
      input.current?.focus();
    } finally {
      setBusy("");
    }
  };

  const askToDelete = () => {
    setError("");
    setNotice("");
    focusNext.current = "question";
    setConfirming(true);
  };

  const cancelDelete = () => {
    focusNext.current = "delete";
    setConfirming(false);
  };

  const remove = async () => {
    if (busy) return;
    setError("");
    setBusy("deleting");
    try {
      await secretsApi<DeleteSecretResponse>("Delete", { providerId, fieldId });
      onDeleted(providerId, fieldId);
      setNotice(`Deleted. No ${fieldName} is stored for ${provider.displayName || providerId}.`);
      setConfirming(false);
      focusNext.current = "input";
    } catch (failure) {
      if (failure instanceof ApiError && failure.code === "NOT_FOUND") {
        // Already gone (deleted in another tab, say): the page catches up.
        onDeleted(providerId, fieldId);
        setNotice(`This ${fieldName} was already deleted.`);
        setConfirming(false);
        focusNext.current = "input";
      } else {
        setError(`The ${fieldName} was not deleted. ${plain(messageOf(failure))}`);
      }
    } finally {
      setBusy("");
    }
  };

  const onConfirmKey = (event: KeyboardEvent) => {
    if (event.key === "Escape") {
      event.preventDefault();
      cancelDelete();
    }
  };

  // Shown one per line: a format example may end without a full stop ("https://…").
  const hint = [
    field.placeholder ? `Format: ${field.placeholder}` : "",
    field.required ? "" : "Optional.",
    secret ? "Saving a new value replaces the stored one." : "",
  ].filter(Boolean);

  const inputProps = {
    id: `${base}-input`,
    ref: input,
    value,
    autocomplete: "off",
    spellcheck: false,
    autocapitalize: "off" as const,
    "aria-describedby": `${base}-status${hint.length > 0 ? ` ${base}-hint` : ""}`,
    "aria-invalid": error ? ("true" as const) : undefined,
    onInput: (event: TargetedInputEvent<HTMLInputElement>) => setValue(event.currentTarget.value),
  };

  return (
    <div class="key-field">
      <p class="key-field__status" id={`${base}-status`}>
        <span class="key-field__name">{fieldName}: </span>
        <strong class={secret ? "state state--stored" : "state"} data-testid={`status-${providerId}-${fieldId}`}>
          {secret ? "Stored" : "Not set"}
        </strong>
        {secret && updated && (
          <span class="muted">
            {" "}
            · last set <time dateTime={updated.toISOString()}>{formatTime(updated)}</time>
          </span>
        )}
      </p>
      <form class="key-form" onSubmit={save} aria-busy={busy === "saving"} noValidate>
        <label for={`${base}-input`}>
          New value for {fieldName}
          <span class="visually-hidden"> ({provider.displayName || providerId})</span>
        </label>
        {hint.length > 0 && (
          <p class="hint" id={`${base}-hint`}>
            {hint.map((part) => (
              <span key={part} class="hint__part">
                {part}{" "}
              </span>
            ))}
          </p>
        )}
        <div class="key-form__row">
          {/* A URL is not a secret and is easier to check while typing; it is still write-only. */}
          {isUrl ? <input type="url" inputMode="url" {...inputProps} /> : <input type="password" {...inputProps} />}
          <button type="submit" class="button button--primary" disabled={busy !== ""}>
            {busy === "saving" ? "Saving…" : "Save"}
            <span class="visually-hidden"> {fullName}</span>
          </button>
        </div>
      </form>
      {secret && !confirming && (
        <button type="button" class="button button--danger key-field__delete" ref={deleteButton} onClick={askToDelete} disabled={busy !== ""}>
          Delete<span class="visually-hidden"> the stored {fullName}</span>
        </button>
      )}
      {confirming && (
        <div class="confirm" role="group" aria-labelledby={`${base}-question`} onKeyDown={onConfirmKey}>
          <p id={`${base}-question`} ref={question} tabIndex={-1}>
            Delete the stored {fullName}?{" "}
            {provider.capabilityDisplayName && field.required
              ? `Your agent can no longer use ${provider.capabilityDisplayName} until you save it again.`
              : "Your agent stops using it."}
          </p>
          <div class="confirm__actions">
            <button type="button" class="button button--danger-solid" onClick={remove} disabled={busy !== ""}>
              {busy === "deleting" ? "Deleting…" : "Yes, delete"}
            </button>
            <button type="button" class="button" onClick={cancelDelete} disabled={busy === "deleting"}>
              Cancel
            </button>
          </div>
        </div>
      )}
      <p class="notice" role="status">
        {notice}
      </p>
      <ErrorMessage message={error} />
    </div>
  );
}
