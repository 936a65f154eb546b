// The one way this app talks to the platform's edge (docs/browser-edge.md): JSON in and out,
// the CSRF double-submit header on every POST, and errors as ApiError with the server's plain
// message. A 401 from anything but a sign-in form tells the app that the session is gone.

/** An error answer ({code, message}) or a failure to reach the server at all. */
export class ApiError extends Error {
  constructor(
    /** The HTTP status; 0 when the server could not be reached. */
    readonly status: number,
    /** The gRPC code name ("UNAUTHENTICATED", ...), or "NETWORK" / "UNKNOWN". */
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

// Behind TLS the cookie carries the __Host- prefix; in development it does not.
const CSRF_COOKIES = ["__Host-tidepool_csrf", "tidepool_csrf"];

/** The CSRF cookie's value (readable by script by design), or "" when there is none. */
export function csrfToken(): string {
  const cookies = new Map<string, string>();
  for (const part of document.cookie.split(";")) {
    const at = part.indexOf("=");
    if (at > 0) cookies.set(part.slice(0, at).trim(), part.slice(at + 1).trim());
  }
  for (const name of CSRF_COOKIES) {
    const value = cookies.get(name);
    if (value) return value;
  }
  return "";
}

/** The browser's IANA time zone ("Europe/Berlin"), or "" if the browser does not say. */
export function browserTimeZone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone ?? "";
  } catch {
    return "";
  }
}

type UnauthorizedListener = () => void;
let onUnauthorized: UnauthorizedListener = () => {};

/** Sets what happens when a call finds the session gone (the app shows the sign-in page). */
export function setUnauthorizedHandler(listener: UnauthorizedListener): void {
  onUnauthorized = listener;
}

/** Tells the app that the session is gone without a 401 (a terminal closed with 1008). */
export function sessionEnded(): void {
  onUnauthorized();
}

// Where a 401 means "wrong password" or "bad setup link", not "session gone".
const SIGN_IN_FORMS = new Set(["/auth/password", "/auth/setup"]);

export interface ApiOptions {
  /** GET when there is no body, POST otherwise. */
  method?: "GET" | "POST";
  /** Sent as JSON. */
  body?: unknown;
  signal?: AbortSignal;
}

/** Calls the edge and returns the JSON answer; throws ApiError on any failure. */
export async function api<T>(path: string, options: ApiOptions = {}): Promise<T> {
  const method = options.method ?? (options.body === undefined ? "GET" : "POST");
  const headers: Record<string, string> = { Accept: "application/json" };
  let body: string | undefined;
  if (method === "POST") {
    headers["Content-Type"] = "application/json";
    const token = csrfToken();
    if (token) headers["X-Tidepool-CSRF"] = token;
    body = JSON.stringify(options.body ?? {});
  }

  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body,
      credentials: "same-origin",
      cache: "no-store",
      signal: options.signal,
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError(0, "NETWORK", "Tidepool could not be reached. Check your connection and try again.");
  }

  let text = "";
  try {
    text = await response.text();
  } catch (error) {
    // An aborted call is not an empty answer.
    if (options.signal?.aborted) throw error;
  }
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = undefined;
  }

  if (!response.ok) {
    if (response.status === 401 && !SIGN_IN_FORMS.has(path)) onUnauthorized();
    throw errorFrom(response.status, data);
  }
  if (data === undefined) {
    throw new ApiError(response.status, "UNKNOWN", "The server sent an answer this page cannot read.");
  }
  return data as T;
}

function errorFrom(status: number, data: unknown): ApiError {
  if (typeof data === "object" && data !== null) {
    const { code, message } = data as { code?: unknown; message?: unknown };
    if (typeof message === "string" && message) {
      return new ApiError(status, typeof code === "string" ? code : "UNKNOWN", sentence(message));
    }
  }
  if (status >= 500) {
    return new ApiError(status, "UNAVAILABLE", "Tidepool is not answering right now. Try again in a moment.");
  }
  return new ApiError(status, "UNKNOWN", `The request failed (HTTP ${status}).`);
}

/** "password must be at least 12 characters" → "Password must be at least 12 characters." */
function sentence(message: string): string {
  const trimmed = message.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

/** A message fit to show a person, whatever was thrown. */
export function messageOf(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  return "Something went wrong. Reload the page and try again.";
}

// ---- The shapes this app reads (protobuf JSON: camelCase, defaults omitted, enums as names).

/** GET /auth/session */
export interface Session {
  userId: string;
  sessionId: string;
  role: "admin" | "user";
  expireTime: string;
  /** proxy.preview_domain; absent when previews are off. */
  previewDomain?: string;
}

/** tidepool.auth.v1.Provider */
export interface Provider {
  providerId?: string;
  kind?: string;
  displayName?: string;
}

/** tidepool.auth.v1.ListProvidersResponse (GET /auth/providers) */
export interface ListProvidersResponse {
  providers?: Provider[];
  inviteRequired?: boolean;
}

/** tidepool.common.v1.WorkspaceState, as its enum name. */
export type WorkspaceState =
  | "WORKSPACE_STATE_UNSPECIFIED"
  | "WORKSPACE_STATE_PROVISIONING"
  | "WORKSPACE_STATE_RUNNING"
  | "WORKSPACE_STATE_SLEEPING"
  | "WORKSPACE_STATE_FAILED"
  | "WORKSPACE_STATE_SUSPENDED"
  | "WORKSPACE_STATE_DELETED";

/** tidepool.provisioner.v1.Workspace (the fields this app reads). */
export interface Workspace {
  workspaceId?: string;
  ownerUserId?: string;
  profile?: string;
  state?: WorkspaceState;
  desiredState?: WorkspaceState;
  stateReason?: string;
}

/** EnsureWorkspaceResponse, GetWorkspaceResponse and WakeWorkspaceResponse. */
export interface WorkspaceResponse {
  workspace?: Workspace;
  created?: boolean;
}

/** tidepool.auth.v1.GetUserResponse (the fields this app reads). */
export interface GetUserResponse {
  user?: { userId?: string; email?: string; displayName?: string };
}

// ---- tidepool.secrets.v1 (the keys page). Values are write-only: no answer ever carries one.

/** tidepool.secrets.v1.ProviderCategory, as its enum name. */
export type ProviderCategory =
  | "PROVIDER_CATEGORY_UNSPECIFIED"
  | "PROVIDER_CATEGORY_AI_MODEL"
  | "PROVIDER_CATEGORY_WEB_SEARCH"
  | "PROVIDER_CATEGORY_MESSAGING"
  | "PROVIDER_CATEGORY_DEVELOPER";

/** tidepool.secrets.v1.FieldKind, as its enum name. */
export type FieldKind = "FIELD_KIND_UNSPECIFIED" | "FIELD_KIND_SECRET" | "FIELD_KIND_URL";

/** tidepool.secrets.v1.ProviderField (the fields this app reads). */
export interface KeyField {
  fieldId?: string;
  displayName?: string;
  kind?: FieldKind;
  format?: string;
  placeholder?: string;
  required?: boolean;
  maxLength?: number;
}

/** tidepool.secrets.v1.Provider (the fields this app reads; not the profile mappings). */
export interface KeyProvider {
  providerId?: string;
  displayName?: string;
  category?: ProviderCategory;
  description?: string;
  docsUrl?: string;
  fields?: KeyField[];
  capability?: string;
  capabilityDisplayName?: string;
}

/** tidepool.secrets.v1.GetCatalogueResponse */
export interface GetCatalogueResponse {
  providers?: KeyProvider[];
  catalogueVersion?: string;
}

/** tidepool.secrets.v1.SecretMetadata: what is known about a stored value, never the value.
 * Timestamps are RFC 3339 strings; int64 fields are strings in protobuf's JSON mapping. */
export interface SecretMetadata {
  userId?: string;
  providerId?: string;
  fieldId?: string;
  createTime?: string;
  updateTime?: string;
  version?: string;
  fingerprint?: string;
}

/** tidepool.secrets.v1.ListResponse */
export interface ListSecretsResponse {
  secrets?: SecretMetadata[];
  capabilities?: string[];
}

/** tidepool.secrets.v1.PutResponse */
export interface PutSecretResponse {
  secret?: SecretMetadata;
  appliesWithoutRestart?: boolean;
}

/** tidepool.secrets.v1.DeleteResponse */
export interface DeleteSecretResponse {
  deletedSecrets?: SecretMetadata[];
}

/** POSTs JSON to a route that answers with application/x-ndjson (the supervisor's GitClone) and
 * hands each line to `onLine` as it arrives. Throws ApiError like api(): for an error answer,
 * and for an error line ({code, message}, sent when the stream fails after it began). */
export async function apiStream<T>(path: string, body: unknown, onLine: (line: T) => void, signal?: AbortSignal): Promise<void> {
  const headers: Record<string, string> = { Accept: "application/x-ndjson", "Content-Type": "application/json" };
  const token = csrfToken();
  if (token) headers["X-Tidepool-CSRF"] = token;
  let response: Response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers,
      body: JSON.stringify(body ?? {}),
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError(0, "NETWORK", "Tidepool could not be reached. Check your connection and try again.");
  }
  if (!response.ok || !response.body) {
    const text = await response.text().catch(() => "");
    let data: unknown = undefined;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      data = undefined;
    }
    if (response.status === 401) onUnauthorized();
    throw errorFrom(response.status, data);
  }

  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  const handle = (line: string) => {
    if (!line.trim()) return;
    let data: unknown;
    try {
      data = JSON.parse(line);
    } catch {
      throw new ApiError(response.status, "UNKNOWN", "The server sent an answer this page cannot read.");
    }
    if (typeof data === "object" && data !== null && "code" in data && "message" in data) {
      // The stream's last line after a failure; its code says which HTTP status it stands for.
      const code = String((data as { code: unknown }).code);
      throw errorFrom(STREAM_ERROR_STATUS[code] ?? 500, data);
    }
    onLine(data as T);
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let cut: number;
      while ((cut = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, cut);
        pending = pending.slice(cut + 1);
        handle(line);
      }
    }
  } catch (error) {
    if (error instanceof ApiError) throw error;
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError(0, "NETWORK", "The connection was lost before the answer was complete. Try again.");
  }
  handle(pending + decoder.decode());
}

// The HTTP status each gRPC code stands for (the supervisor's table), for errors that arrive
// as the last line of a stream that had already answered 200.
const STREAM_ERROR_STATUS: Record<string, number> = {
  INVALID_ARGUMENT: 400,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  ABORTED: 409,
  FAILED_PRECONDITION: 412,
  RESOURCE_EXHAUSTED: 429,
  UNAVAILABLE: 503,
};
