// "/files" with a session: the workspace's home directory. Once the workspace runs
// (useWorkspace), the supervisor's file API is called through the edge at
// `/w/<id>/_tidepool/v1/<Method>` (POST, protobuf JSON, the CSRF header from api.ts): ListFiles,
// MakeDirectory, MovePath, DeletePath, ExtractArchive. Uploads are chunked PUTs to
// `/_tidepool/v1/upload?upload_id=&path=&offset=&total_size=` sent with XMLHttpRequest (for
// the upload progress); downloads are plain links to `/_tidepool/v1/download?path=`.
// The folder shown is kept in the URL (`/files?path=projects/app`), so reload and Back work.
import type { TargetedEvent } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError, csrfToken, messageOf } from "../api";
import { Link, navigate, useLocation } from "../router";
import { ErrorMessage, Page } from "../ui";
import { describe, useWorkspace } from "../workspace";

type FileType = "FILE_TYPE_UNSPECIFIED" | "FILE_TYPE_REGULAR" | "FILE_TYPE_DIRECTORY" | "FILE_TYPE_SYMLINK" | "FILE_TYPE_OTHER";

/** tidepool.supervisor.v1.FileInfo (int64 as strings in protobuf JSON). */
interface FileInfo {
  name?: string;
  path?: string;
  type?: FileType;
  sizeBytes?: string;
  modifyTime?: string;
  symlinkTarget?: string;
  stamped?: boolean;
}

interface ListFilesResponse {
  directory?: FileInfo;
  entries?: FileInfo[];
  page?: { nextPageToken?: string; totalSize?: string };
}

interface ExtractArchiveResponse {
  destination?: FileInfo;
  fileCount?: string;
  directoryCount?: string;
  symlinkCount?: string;
  extractedBytes?: string;
}

/** One file to upload: where it goes (relative to the folder shown) and its bytes. */
interface Pending {
  relative: string;
  file: File;
}

interface UploadRow {
  id: string;
  path: string;
  total: number;
  sent: number;
  state: "uploading" | "done" | "failed";
  error?: string;
}

const CHUNK = 8 * 1024 * 1024;

/** "a//b/" → "a/b"; never leading or trailing slashes. */
function clean(path: string): string {
  return path
    .split("/")
    .filter((part) => part && part !== "." && part !== "..")
    .join("/");
}

function join(folder: string, name: string): string {
  return clean(folder ? `${folder}/${name}` : name);
}

function currentFolder(): string {
  return clean(new URLSearchParams(window.location.search).get("path") ?? "");
}

function folderHref(path: string): string {
  return path ? `/files?${new URLSearchParams({ path })}` : "/files";
}

function isArchive(name: string): boolean {
  return /\.(zip|tar\.gz|tgz|tar|tar\.bz2|tar\.xz|7z)$/i.test(name);
}

/** "site.zip" → "site", "app.tar.gz" → "app". */
function archiveStem(name: string): string {
  return name.replace(/\.(zip|tar\.gz|tgz|tar|tar\.bz2|tar\.xz|7z)$/i, "") || "extracted";
}

function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function formatTime(time: string | undefined): string {
  if (!time) return "";
  const date = new Date(time);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

function typeLabel(type: FileType | undefined): string {
  switch (type) {
    case "FILE_TYPE_DIRECTORY":
      return "Folder";
    case "FILE_TYPE_REGULAR":
      return "File";
    case "FILE_TYPE_SYMLINK":
      return "Link";
    default:
      return "Other";
  }
}

function randomId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = new Uint8Array(32);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

/** The error in plain words, with the file API's codes spelled out. */
function plain(error: unknown): string {
  if (error instanceof ApiError) {
    // The edge may pass the supervisor's status without a JSON body: then only the status says it.
    const detail = /^The request failed \(HTTP \d+\)\.$/.test(error.message) ? "" : ` ${error.message}`;
    if (error.status === 507 || error.code === "RESOURCE_EXHAUSTED") {
      return `Your workspace's storage is full, or this is too large for the space left.${detail}`;
    }
    if (error.status === 409 || error.code === "ALREADY_EXISTS") {
      return `That name is already taken: something with that name exists here.${detail}`;
    }
    if (error.status === 404 || error.code === "NOT_FOUND") return `That file or folder no longer exists.${detail}`;
  }
  return messageOf(error);
}

/** Walks a dropped folder (DataTransferItem.webkitGetAsEntry) into files with relative paths. */
async function walkEntry(entry: FileSystemEntry, prefix: string, out: Pending[]): Promise<void> {
  const path = prefix ? `${prefix}/${entry.name}` : entry.name;
  if (entry.isFile) {
    const file = await new Promise<File>((resolve, reject) => (entry as FileSystemFileEntry).file(resolve, reject));
    out.push({ relative: path, file });
    return;
  }
  if (entry.isDirectory) {
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    // readEntries returns the entries in batches until an empty one.
    for (;;) {
      const batch = await new Promise<FileSystemEntry[]>((resolve, reject) => reader.readEntries(resolve, reject));
      if (batch.length === 0) break;
      for (const child of batch) await walkEntry(child, path, out);
    }
  }
}

/** One chunk, with progress; resolves with the JSON answer or rejects with an ApiError. */
function putChunk(url: string, body: Blob, onProgress: (loaded: number) => void): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    const token = csrfToken();
    if (token) xhr.setRequestHeader("X-Tidepool-CSRF", token);
    xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onerror = () => reject(new ApiError(0, "NETWORK", "Tidepool could not be reached. Check your connection and try again."));
    xhr.onload = () => {
      let data: { code?: string; message?: string } = {};
      try {
        data = xhr.responseText ? JSON.parse(xhr.responseText) : {};
      } catch {
        data = {};
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(data);
        return;
      }
      const message = typeof data.message === "string" && data.message ? data.message : `The upload failed (HTTP ${xhr.status}).`;
      const code = typeof data.code === "string" ? data.code : xhr.status === 507 ? "RESOURCE_EXHAUSTED" : "UNKNOWN";
      const capital = message.charAt(0).toUpperCase() + message.slice(1);
      reject(new ApiError(xhr.status, code, /[.!?]$/.test(capital) ? capital : `${capital}.`));
    };
    xhr.send(body);
  });
}

export function FilesPage() {
  const location = useLocation();
  const [attempt, setAttempt] = useState(0);
  const { workspace, waking, error: progressError, stopped } = useWorkspace(attempt);
  const workspaceId = workspace?.state === "WORKSPACE_STATE_RUNNING" ? workspace.workspaceId : undefined;
  const folder = currentFolder();

  const [entries, setEntries] = useState<FileInfo[] | undefined>(undefined);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState("");
  const [notice, setNotice] = useState("");
  const [refresh, setRefresh] = useState(0);
  const [newFolder, setNewFolder] = useState<string | null>(null);
  const [renaming, setRenaming] = useState<{ path: string; name: string } | null>(null);
  const [deleting, setDeleting] = useState<FileInfo | null>(null);
  const [uploads, setUploads] = useState<UploadRow[]>([]);
  const [dragging, setDragging] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const folderInput = useRef<HTMLInputElement>(null);
  const newFolderInput = useRef<HTMLInputElement>(null);
  const renameInput = useRef<HTMLInputElement>(null);
  const confirmText = useRef<HTMLParagraphElement>(null);

  const base = workspaceId ? `/w/${encodeURIComponent(workspaceId)}/_tidepool/v1` : "";
  const call = <T,>(method: string, body: object) => api<T>(`${base}/${method}`, { body });

  // The folder's entries, all pages of them.
  useEffect(() => {
    if (!base) return undefined;
    const controller = new AbortController();
    setLoading(true);
    const load = async () => {
      const all: FileInfo[] = [];
      let pageToken = "";
      for (;;) {
        const answer = await api<ListFilesResponse>(`${base}/ListFiles`, {
          body: { path: folder, page: { pageSize: 1000, pageToken } },
          signal: controller.signal,
        });
        all.push(...(answer.entries ?? []));
        pageToken = answer.page?.nextPageToken ?? "";
        if (!pageToken) return all;
      }
    };
    load()
      .then((all) => {
        setEntries(all);
        setError("");
      })
      .catch((failure: unknown) => {
        if (controller.signal.aborted) return;
        setEntries([]);
        setError(plain(failure));
      })
      .finally(() => {
        if (!controller.signal.aborted) setLoading(false);
      });
    return () => controller.abort();
  }, [base, folder, refresh, location.key]);

  useEffect(() => {
    if (newFolder !== null) newFolderInput.current?.focus();
  }, [newFolder !== null]);
  useEffect(() => {
    if (renaming) renameInput.current?.focus();
  }, [renaming?.path]);
  useEffect(() => {
    if (deleting) confirmText.current?.focus();
  }, [deleting?.path]);

  const reload = () => setRefresh((n) => n + 1);

  const run = async (action: () => Promise<string | void>) => {
    setError("");
    setNotice("");
    try {
      const message = await action();
      if (message) setNotice(message);
      reload();
      return true;
    } catch (failure) {
      setError(plain(failure));
      return false;
    }
  };

  const createFolder = async (event: TargetedEvent<HTMLFormElement>) => {
    event.preventDefault();
    const name = (newFolder ?? "").trim();
    if (!name || name.includes("/")) {
      setError("Enter a folder name without slashes.");
      return;
    }
    if (await run(async () => {
      await call("MakeDirectory", { path: join(folder, name) });
      return `Folder "${name}" created.`;
    })) setNewFolder(null);
  };

  const rename = async (event: TargetedEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (!renaming) return;
    const name = renaming.name.trim();
    if (!name || name.includes("/")) {
      setError("Enter a new name without slashes.");
      return;
    }
    const source = renaming.path;
    if (await run(async () => {
      await call("MovePath", { sourcePath: source, destinationPath: join(folder, name) });
      return `Renamed to "${name}".`;
    })) setRenaming(null);
  };

  const remove = async () => {
    if (!deleting) return;
    const target = deleting;
    if (await run(async () => {
      await call("DeletePath", { path: target.path, recursive: target.type === "FILE_TYPE_DIRECTORY" });
      return `"${target.name}" deleted.`;
    })) setDeleting(null);
  };

  const extract = (entry: FileInfo) =>
    run(async () => {
      const destination = join(folder, archiveStem(entry.name ?? ""));
      const answer = await call<ExtractArchiveResponse>("ExtractArchive", {
        archivePath: entry.path,
        destinationPath: destination,
      });
      const files = Number(answer.fileCount ?? 0);
      const folders = Number(answer.directoryCount ?? 0);
      return `Extracted ${files} ${files === 1 ? "file" : "files"} and ${folders} ${folders === 1 ? "folder" : "folders"} (${formatSize(Number(answer.extractedBytes ?? 0))}) into "${answer.destination?.path ?? destination}".`;
    });

  const upload = async (pending: Pending[]) => {
    if (!base || pending.length === 0) return;
    setError("");
    setNotice("");
    const rows: UploadRow[] = pending.map(({ relative, file }) => ({
      id: randomId(),
      path: join(folder, relative),
      total: file.size,
      sent: 0,
      state: "uploading",
    }));
    setUploads((previous) => [...previous.filter((row) => row.state === "uploading"), ...rows]);
    const update = (id: string, change: Partial<UploadRow>) =>
      setUploads((previous) => previous.map((row) => (row.id === id ? { ...row, ...change } : row)));
    let failures = 0;
    for (let i = 0; i < pending.length; i += 1) {
      const { file } = pending[i];
      const row = rows[i];
      try {
        let offset = 0;
        do {
          const end = Math.min(offset + CHUNK, file.size);
          const query = new URLSearchParams({
            upload_id: row.id,
            path: row.path,
            offset: String(offset),
            total_size: String(file.size),
          });
          const start = offset;
          await putChunk(`${base}/upload?${query}`, file.slice(offset, end), (loaded) =>
            update(row.id, { sent: Math.min(start + loaded, file.size) }),
          );
          offset = end;
        } while (offset < file.size);
        update(row.id, { sent: file.size, state: "done" });
      } catch (failure) {
        failures += 1;
        const message = plain(failure);
        update(row.id, { state: "failed", error: message });
        setError(`"${row.path}" was not uploaded: ${message}`);
      }
    }
    if (failures === 0) setNotice(`Uploaded ${pending.length} ${pending.length === 1 ? "file" : "files"}.`);
    reload();
  };

  const onPicked = (event: TargetedEvent<HTMLInputElement>) => {
    const input = event.currentTarget;
    const files = Array.from(input.files ?? []);
    const pending = files.map((file) => ({ relative: clean(file.webkitRelativePath || file.name), file }));
    input.value = "";
    void upload(pending);
  };

  const onDrop = async (event: DragEvent) => {
    event.preventDefault();
    setDragging(false);
    const transfer = event.dataTransfer;
    if (!transfer) return;
    const pending: Pending[] = [];
    const items = Array.from(transfer.items ?? []);
    const entriesDropped = items
      .filter((item) => item.kind === "file")
      .map((item) => item.webkitGetAsEntry?.() ?? null);
    try {
      if (entriesDropped.length > 0 && entriesDropped.every((entry) => entry !== null)) {
        for (const entry of entriesDropped) await walkEntry(entry as FileSystemEntry, "", pending);
      } else {
        for (const file of Array.from(transfer.files)) pending.push({ relative: file.name, file });
      }
    } catch {
      setError("The dropped files could not be read. Try the Upload buttons instead.");
      return;
    }
    void upload(pending);
  };

  const crumbs = folder ? folder.split("/") : [];
  const { label, busy } = describe(workspace, waking, stopped);
  const shownError = error || progressError;

  return (
    <Page testId="files-page" title="Files" wide>
      {!workspaceId && (
        <div class="card">
          <p class="state-line" role="status" aria-busy={busy}>
            Workspace: {label}
          </p>
          {stopped && (
            <button type="button" class="button" onClick={() => setAttempt(attempt + 1)}>
              Try again
            </button>
          )}
        </div>
      )}

      <ErrorMessage message={shownError} />
      <p class="notice" role="status" data-testid="files-notice">
        {notice}
      </p>

      {workspaceId && (
        <>
          <nav aria-label="Folder path" class="breadcrumb" data-testid="breadcrumb">
            <ol>
              <li>
                <Link href={folderHref("")} aria-current={folder === "" ? "page" : undefined}>
                  Home
                </Link>
              </li>
              {crumbs.map((part, index) => {
                const path = crumbs.slice(0, index + 1).join("/");
                return (
                  <li key={path}>
                    <Link href={folderHref(path)} aria-current={path === folder ? "page" : undefined}>
                      {part}
                    </Link>
                  </li>
                );
              })}
            </ol>
          </nav>

          <div class="files-actions">
            <button type="button" class="button" onClick={() => setNewFolder(newFolder === null ? "" : null)} aria-expanded={newFolder !== null}>
              New folder
            </button>
            <button type="button" class="button" onClick={() => fileInput.current?.click()}>
              Upload files
            </button>
            <button type="button" class="button" onClick={() => folderInput.current?.click()}>
              Upload folder
            </button>
            <input
              ref={fileInput}
              class="visually-hidden"
              type="file"
              multiple
              tabIndex={-1}
              aria-label="Files to upload"
              data-testid="upload-files-input"
              onChange={onPicked}
            />
            <input
              ref={folderInput}
              class="visually-hidden"
              type="file"
              multiple
              {...{ webkitdirectory: true }}
              tabIndex={-1}
              aria-label="Folder to upload"
              data-testid="upload-folder-input"
              onChange={onPicked}
            />
          </div>

          {newFolder !== null && (
            <form class="inline-form" onSubmit={createFolder}>
              <label for="new-folder-name">Folder name</label>
              <div class="inline-form__row">
                <input
                  ref={newFolderInput}
                  id="new-folder-name"
                  type="text"
                  value={newFolder}
                  onInput={(event) => setNewFolder(event.currentTarget.value)}
                  onKeyDown={(event) => {
                    if (event.key === "Escape") setNewFolder(null);
                  }}
                />
                <button type="submit" class="button button--primary">
                  Create
                </button>
                <button type="button" class="button" onClick={() => setNewFolder(null)}>
                  Cancel
                </button>
              </div>
            </form>
          )}

          {uploads.length > 0 && (
            <section aria-labelledby="uploads-heading" class="uploads">
              <h2 id="uploads-heading">Uploads</h2>
              <ul>
                {uploads.map((row) => (
                  <li key={row.id} data-testid="upload-row" data-state={row.state}>
                    <label for={`upload-${row.id}`}>{row.path}</label>
                    <progress id={`upload-${row.id}`} max={row.total || 1} value={row.total ? row.sent : row.state === "done" ? 1 : 0} />
                    <span class="muted">
                      {row.state === "done" ? "Done" : row.state === "failed" ? `Failed: ${row.error ?? ""}` : `${formatSize(row.sent)} of ${formatSize(row.total)}`}
                    </span>
                  </li>
                ))}
              </ul>
            </section>
          )}

          <div
            class={dragging ? "dropzone dropzone--active" : "dropzone"}
            data-testid="dropzone"
            onDragOver={(event) => {
              event.preventDefault();
              if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
              setDragging(true);
            }}
            onDragLeave={() => setDragging(false)}
            onDrop={(event) => void onDrop(event)}
          >
            <p class="muted dropzone__hint">Drop files or folders here to upload them into this folder.</p>
            {entries === undefined || (loading && entries.length === 0) ? (
              <p class="muted" role="status">
                Loading…
              </p>
            ) : entries.length === 0 ? (
              <p class="muted">This folder is empty.</p>
            ) : (
              <table class="files-table" data-testid="files-table" aria-busy={loading}>
                <caption class="visually-hidden">Contents of {folder || "your home folder"}</caption>
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Type</th>
                    <th scope="col">Size</th>
                    <th scope="col">Modified</th>
                    <th scope="col">
                      <span class="visually-hidden">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {entries.map((entry) => {
                    const name = entry.name ?? "";
                    const path = entry.path ?? join(folder, name);
                    const directory = entry.type === "FILE_TYPE_DIRECTORY";
                    const regular = entry.type === "FILE_TYPE_REGULAR";
                    const download = `${base}/download?${new URLSearchParams({ path })}`;
                    return (
                      <tr key={path} data-testid="file-row" data-name={name}>
                        <th scope="row" class="files-name">
                          {directory ? (
                            <Link href={folderHref(path)}>{name}/</Link>
                          ) : (
                            <span>{name}</span>
                          )}
                        </th>
                        <td data-label="Type">{typeLabel(entry.type)}</td>
                        <td data-label="Size">{directory ? "" : formatSize(Number(entry.sizeBytes ?? 0))}</td>
                        <td data-label="Modified">{formatTime(entry.modifyTime)}</td>
                        <td>
                          <div class="files-row-actions">
                          {regular && (
                            <a class="button button--small" href={download} download={name} aria-label={`Download ${name}`}>
                              Download
                            </a>
                          )}
                          {regular && isArchive(name) && (
                            <button type="button" class="button button--small" aria-label={`Extract ${name}`} onClick={() => void extract(entry)}>
                              Extract
                            </button>
                          )}
                          {!entry.stamped && (
                            <button
                              type="button"
                              class="button button--small"
                              aria-label={`Rename ${name}`}
                              onClick={() => {
                                setDeleting(null);
                                setRenaming({ path, name });
                              }}
                            >
                              Rename
                            </button>
                          )}
                          {!entry.stamped && (
                            <button
                              type="button"
                              class="button button--small button--danger"
                              aria-label={`Delete ${name}`}
                              onClick={() => {
                                setRenaming(null);
                                setDeleting(entry);
                              }}
                            >
                              Delete
                            </button>
                          )}
                          {renaming?.path === path && (
                            <form class="inline-form" onSubmit={rename}>
                              <label for="rename-name">New name for {name}</label>
                              <div class="inline-form__row">
                                <input
                                  ref={renameInput}
                                  id="rename-name"
                                  type="text"
                                  value={renaming.name}
                                  onInput={(event) => setRenaming({ path, name: event.currentTarget.value })}
                                  onKeyDown={(event) => {
                                    if (event.key === "Escape") setRenaming(null);
                                  }}
                                />
                                <button type="submit" class="button button--primary">
                                  Save
                                </button>
                                <button type="button" class="button" onClick={() => setRenaming(null)}>
                                  Cancel
                                </button>
                              </div>
                            </form>
                          )}
                          {deleting?.path === path && (
                            <div class="confirm" role="group" aria-label={`Confirm deleting ${name}`}>
                              <p ref={confirmText} tabIndex={-1}>
                                Delete {directory ? "the folder" : ""} "{name}"{directory ? " and everything in it" : ""}? This cannot be undone.
                              </p>
                              <div class="confirm__actions">
                                <button type="button" class="button button--danger-solid" onClick={() => void remove()}>
                                  Delete
                                </button>
                                <button type="button" class="button" onClick={() => setDeleting(null)}>
                                  Cancel
                                </button>
                              </div>
                            </div>
                          )}
                          </div>
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            )}
          </div>
        </>
      )}
    </Page>
  );
}

// So that the path of the URL and the page agree after a programmatic navigation.
export function openFolder(path: string): void {
  navigate(folderHref(path));
}
