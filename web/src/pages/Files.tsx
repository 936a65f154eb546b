// "/files" with a session: the workspace's home directory. Once the workspace runs
// (useWorkspace), the supervisor's file API is called through the edge at
// `/w/<id>/_tidepool/v1/<Method>` (POST, protobuf JSON, the CSRF header from api.ts): ListFiles,
// MakeDirectory, MovePath, DeletePath, ExtractArchive. Uploads are chunked PUTs to
// `/_tidepool/v1/upload?upload_id=&path=&offset=&total_size=` sent with XMLHttpRequest (for
// the upload progress); downloads are plain links to `/_tidepool/v1/download?path=`.
// The folder shown is kept in the URL (`/files?path=projects/app`), so reload and Back work.
// Beside the list, a tree of the folders (role=tree: arrow keys move, Right/Left expand and
// collapse, Enter opens) follows the folder shown and the changes made in the list. Move puts a
// file or folder into another folder (MovePath); "Clone a repository" runs GitClone, whose answer
// is a stream of ndjson progress lines (apiStream), shown as a progress bar and its steps.
import type { TargetedEvent } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError, apiStream, csrfToken, messageOf } from "../api";
import { Link, navigate, useLocation } from "../router";
import { ErrorMessage, Page, WorkspaceWait } from "../ui";
import { supervisorBase, useWorkspace } from "../workspace";

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

// ---- The folder tree

/** A folder in the tree. */
interface TreeFolder {
  name: string;
  path: string;
}

/** Each folder's subfolders once read ("" is the home folder); "loading" while being read. */
type TreeChildren = Map<string, TreeFolder[] | "loading" | "failed">;

function foldersOf(entries: FileInfo[], parent: string): TreeFolder[] {
  return entries
    .filter((entry) => entry.type === "FILE_TYPE_DIRECTORY")
    .map((entry) => {
      const name = entry.name ?? "";
      return { name, path: entry.path ?? join(parent, name) };
    });
}

/** "a/b/c" → ["", "a", "a/b"]: the folders above a path, the home folder first. */
function ancestors(path: string): string[] {
  const parts = path ? path.split("/") : [];
  return parts.map((_, index) => parts.slice(0, index).join("/"));
}

/** The subfolders of `path` (ListFiles lists folders first, so reading stops at the first file). */
async function readFolders(base: string, path: string, signal: AbortSignal): Promise<TreeFolder[]> {
  const folders: TreeFolder[] = [];
  let pageToken = "";
  for (;;) {
    const answer = await api<ListFilesResponse>(`${base}/ListFiles`, {
      body: { path, page: { pageSize: 500, pageToken } },
      signal,
    });
    // An answer cut off by the abort reads as empty: it must not count.
    if (signal.aborted) throw new DOMException("aborted", "AbortError");
    const entries = answer.entries ?? [];
    folders.push(...foldersOf(entries, path));
    pageToken = answer.page?.nextPageToken ?? "";
    if (!pageToken || entries.some((entry) => entry.type !== "FILE_TYPE_DIRECTORY")) return folders;
  }
}

interface FolderTreeState {
  children: TreeChildren;
  expanded: Set<string>;
  setExpanded: (path: string, open: boolean) => void;
}

/** The tree's data: expands the folders above the one shown, takes the shown folder's subfolders
 * from the list (`listed`), and reads every other expanded folder; `version` reads them again. */
function useFolderTree(base: string, folder: string, listed: { folder: string; entries: FileInfo[] } | undefined, version: number): FolderTreeState {
  const [children, setChildren] = useState<TreeChildren>(new Map());
  const [expanded, setExpandedSet] = useState<Set<string>>(new Set([""]));
  // The folders read for this version (a new version reads the expanded ones again).
  const fetched = useRef<{ version: number; paths: Set<string> }>({ version, paths: new Set() });

  useEffect(() => {
    setExpandedSet((previous) => {
      const next = new Set(previous);
      for (const path of [...ancestors(folder), folder]) next.add(path);
      return next;
    });
  }, [folder]);

  useEffect(() => {
    if (!listed) return;
    setChildren((previous) => new Map(previous).set(listed.folder, foldersOf(listed.entries, listed.folder)));
  }, [listed]);

  useEffect(() => {
    if (!base) return undefined;
    if (fetched.current.version !== version) fetched.current = { version, paths: new Set() };
    const controller = new AbortController();
    for (const path of expanded) {
      // The shown folder comes from the list; the others are read once per version.
      if (path === listed?.folder || fetched.current.paths.has(path)) continue;
      fetched.current.paths.add(path);
      if (!children.has(path)) setChildren((previous) => new Map(previous).set(path, "loading"));
      readFolders(base, path, controller.signal)
        .then((folders) => setChildren((previous) => new Map(previous).set(path, folders)))
        .catch(() => {
          if (controller.signal.aborted) {
            fetched.current.paths.delete(path);
            return;
          }
          setChildren((previous) => new Map(previous).set(path, "failed"));
        });
    }
    return () => controller.abort();
  }, [base, expanded, version, listed?.folder]);

  const setExpanded = (path: string, open: boolean) =>
    setExpandedSet((previous) => {
      const next = new Set(previous);
      if (open) next.add(path);
      else next.delete(path);
      return next;
    });
  return { children, expanded, setExpanded };
}

/** One visible row of the tree, in the order shown. */
interface TreeRow {
  path: string;
  name: string;
  level: number;
  parent: string | undefined;
  /** undefined: not read yet (may have subfolders); false: no subfolders. */
  hasChildren: boolean | undefined;
}

function visibleRows({ children, expanded }: FolderTreeState): TreeRow[] {
  const rows: TreeRow[] = [];
  const visit = (folder: TreeFolder, level: number, parent: string | undefined) => {
    const known = children.get(folder.path);
    const hasChildren = Array.isArray(known) ? known.length > 0 : undefined;
    rows.push({ path: folder.path, name: folder.name, level, parent, hasChildren });
    if (expanded.has(folder.path) && Array.isArray(known)) {
      for (const child of known) visit(child, level + 1, folder.path);
    }
  };
  visit({ path: "", name: "Home" }, 1, undefined);
  return rows;
}

/** The folder tree (the WAI-ARIA tree pattern): one tab stop; Up and Down move, Right expands or
 * goes to the first subfolder, Left collapses or goes to the parent, Home and End, Enter or Space
 * opens the folder in the list. A click on a name opens it, on the arrow expands it. */
function FolderTree({ tree, folder, onOpen }: { tree: FolderTreeState; folder: string; onOpen: (path: string) => void }) {
  const { children, expanded, setExpanded } = tree;
  const [focused, setFocused] = useState(folder);
  const focusNext = useRef(false);
  const root = useRef<HTMLUListElement>(null);
  const rows = visibleRows(tree);
  // The tab stop stays on a visible row: the shown folder when the focused one was collapsed away.
  const tabStop = rows.some((row) => row.path === focused) ? focused : rows.some((row) => row.path === folder) ? folder : "";

  useEffect(() => {
    setFocused(folder);
  }, [folder]);

  useEffect(() => {
    if (!focusNext.current) return;
    focusNext.current = false;
    root.current?.querySelector<HTMLElement>(`[data-path="${CSS.escape(tabStop)}"]`)?.focus();
  });

  const moveTo = (path: string) => {
    focusNext.current = true;
    setFocused(path);
  };

  const onKeyDown = (event: KeyboardEvent) => {
    const index = rows.findIndex((row) => row.path === tabStop);
    const row = rows[index];
    if (!row) return;
    const open = expanded.has(row.path);
    switch (event.key) {
      case "ArrowDown":
        if (index + 1 < rows.length) moveTo(rows[index + 1].path);
        break;
      case "ArrowUp":
        if (index > 0) moveTo(rows[index - 1].path);
        break;
      case "Home":
        moveTo(rows[0].path);
        break;
      case "End":
        moveTo(rows[rows.length - 1].path);
        break;
      case "ArrowRight":
        if (row.hasChildren === false) break;
        if (!open) setExpanded(row.path, true);
        else if (rows[index + 1]?.parent === row.path) moveTo(rows[index + 1].path);
        break;
      case "ArrowLeft":
        if (open && row.hasChildren !== false && row.path !== "") setExpanded(row.path, false);
        else if (row.parent !== undefined) moveTo(row.parent);
        break;
      case "Enter":
      case " ":
        onOpen(row.path);
        break;
      default:
        return;
    }
    event.preventDefault();
  };

  // Rows nest as the tree does: each item holds its group of subfolders.
  const render = (parentPath: string | undefined, level: number) => {
    const siblings = rows.filter((row) => row.parent === parentPath && row.level === level);
    return siblings.map((row, position) => {
      const open = expanded.has(row.path);
      const expandable = row.hasChildren !== false;
      const state = children.get(row.path);
      return (
        <li
          key={row.path}
          role="treeitem"
          aria-level={level}
          aria-setsize={siblings.length}
          aria-posinset={position + 1}
          aria-expanded={expandable ? open : undefined}
          aria-selected={row.path === folder}
          aria-label={row.name}
          aria-busy={open && state === "loading" ? true : undefined}
          tabIndex={row.path === tabStop ? 0 : -1}
          data-path={row.path}
          data-testid="tree-item"
          onFocus={(event) => {
            if (event.target === event.currentTarget) setFocused(row.path);
          }}
        >
          <div class="tree__row" style={{ paddingLeft: `${(level - 1) * 1}rem` }} onClick={() => onOpen(row.path)}>
            <span
              class="tree__twisty"
              aria-hidden="true"
              onClick={(event) => {
                event.stopPropagation();
                if (expandable) setExpanded(row.path, !open);
              }}
            >
              {expandable ? (open ? "▾" : "▸") : ""}
            </span>
            <span class="tree__name">{row.name}</span>
          </div>
          {open && expandable && (
            <ul role="group">
              {state === "failed" ? (
                <li role="none" class="tree__note muted" style={{ paddingLeft: `${level + 1}rem` }}>
                  Could not be read.
                </li>
              ) : (
                render(row.path, level + 1)
              )}
            </ul>
          )}
        </li>
      );
    });
  };

  return (
    <ul ref={root} class="tree" role="tree" aria-label="Folders" data-testid="folder-tree" onKeyDown={onKeyDown}>
      {render(undefined, 1)}
    </ul>
  );
}

// ---- Git clone

type ClonePhase =
  | "GIT_CLONE_PHASE_UNSPECIFIED"
  | "GIT_CLONE_PHASE_CONNECTING"
  | "GIT_CLONE_PHASE_COUNTING_OBJECTS"
  | "GIT_CLONE_PHASE_COMPRESSING_OBJECTS"
  | "GIT_CLONE_PHASE_RECEIVING_OBJECTS"
  | "GIT_CLONE_PHASE_RESOLVING_DELTAS"
  | "GIT_CLONE_PHASE_CHECKING_OUT"
  | "GIT_CLONE_PHASE_DONE";

/** tidepool.supervisor.v1.GitCloneResponse */
interface GitCloneResponse {
  phase?: ClonePhase;
  percent?: number;
  message?: string;
  receivedBytes?: string;
  destination?: FileInfo;
}

/** Each phase in words, and the share of the whole clone it ends at (for one progress bar). */
const CLONE_PHASES: Record<ClonePhase, { words: string; from: number; to: number }> = {
  GIT_CLONE_PHASE_UNSPECIFIED: { words: "Starting", from: 0, to: 0 },
  GIT_CLONE_PHASE_CONNECTING: { words: "Connecting", from: 0, to: 5 },
  GIT_CLONE_PHASE_COUNTING_OBJECTS: { words: "Counting objects", from: 5, to: 10 },
  GIT_CLONE_PHASE_COMPRESSING_OBJECTS: { words: "Compressing objects", from: 10, to: 20 },
  GIT_CLONE_PHASE_RECEIVING_OBJECTS: { words: "Receiving objects", from: 20, to: 80 },
  GIT_CLONE_PHASE_RESOLVING_DELTAS: { words: "Resolving deltas", from: 80, to: 95 },
  GIT_CLONE_PHASE_CHECKING_OUT: { words: "Checking out files", from: 95, to: 100 },
  GIT_CLONE_PHASE_DONE: { words: "Done", from: 100, to: 100 },
};

interface CloneProgress {
  state: "running" | "done" | "failed";
  phase: ClonePhase;
  /** Of the current phase, 0..100. */
  percent: number;
  /** Of the whole clone, 0..100. */
  overall: number;
  /** The phases seen, in order. */
  steps: ClonePhase[];
  destination: string;
  error?: string;
}

/** "https://github.com/org/app.git" or "src/app/" → "app" (what git itself would name it). */
function repositoryName(url: string): string {
  const last = url.replace(/[/\\]+$/, "").split(/[/:]/).pop() ?? "";
  return last.replace(/\.git$/i, "") || "repository";
}

/** A clone's error in plain words. */
function cloneError(error: unknown): string {
  if (error instanceof ApiError) {
    const detail = /^The request failed \(HTTP \d+\)\.$/.test(error.message) ? "" : ` (${error.message.replace(/\.$/, "")})`;
    switch (error.code) {
      case "INVALID_ARGUMENT":
        return `That repository address cannot be used${detail}. Use an https:// address without a password in it, or the path of a repository in your files.`;
      case "ALREADY_EXISTS":
        return "The folder to clone into already exists and is not empty. Choose another folder name.";
      case "NOT_FOUND":
        return "The repository (or that branch) does not exist, or it is private.";
      case "PERMISSION_DENIED":
        return `The repository refused access, or its site is not one your workspace may reach${detail}.`;
      case "UNAVAILABLE":
        return `The repository could not be reached from your workspace${detail}. Try again later.`;
      case "RESOURCE_EXHAUSTED":
        return "The repository does not fit in your workspace's storage.";
      default:
        return `The clone failed${detail}.`;
    }
  }
  return messageOf(error);
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
  // The entries of the folder they were read for (the tree takes its subfolders from there).
  const [listed, setListed] = useState<{ folder: string; entries: FileInfo[] } | undefined>(undefined);
  const [moving, setMoving] = useState<{ path: string; name: string; to: string } | null>(null);
  const [cloneForm, setCloneForm] = useState<{ url: string; to: string } | null>(null);
  const [clone, setClone] = useState<CloneProgress | null>(null);
  const moveInput = useRef<HTMLInputElement>(null);
  const cloneInput = useRef<HTMLInputElement>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const folderInput = useRef<HTMLInputElement>(null);
  const newFolderInput = useRef<HTMLInputElement>(null);
  const renameInput = useRef<HTMLInputElement>(null);
  const confirmText = useRef<HTMLParagraphElement>(null);

  const base = workspaceId ? supervisorBase(workspaceId) : "";
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
        // An answer cut off by the abort reads as empty (api.ts): only a current one counts.
        if (controller.signal.aborted) return;
        setEntries(all);
        setListed({ folder, entries: all });
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
  useEffect(() => {
    if (moving) moveInput.current?.focus();
  }, [moving?.path]);
  useEffect(() => {
    if (cloneForm) cloneInput.current?.focus();
  }, [cloneForm !== null]);

  const tree = useFolderTree(base, folder, listed, refresh);
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

  const move = async (event: TargetedEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (!moving) return;
    const raw = moving.to.trim();
    if (raw.split("/").some((part) => part === "..")) {
      setError('Enter a folder path from your home folder, without "..".');
      return;
    }
    const target = clean(raw);
    const source = moving.path;
    if (target === folder) {
      setError(`"${moving.name}" is already in that folder. Enter another folder.`);
      return;
    }
    if (target === source || target.startsWith(`${source}/`)) {
      setError(`A folder cannot be moved into itself. Enter a folder outside "${moving.name}".`);
      return;
    }
    const where = target ? `"${target}"` : "your home folder";
    setError("");
    setNotice("");
    try {
      await call("MovePath", { sourcePath: source, destinationPath: join(target, moving.name) });
      setMoving(null);
      setNotice(`Moved "${moving.name}" to ${where}.`);
      reload();
    } catch (failure) {
      if (failure instanceof ApiError && (failure.status === 404 || failure.code === "NOT_FOUND")) {
        setError(`There is no folder ${where}. Check the name, or create the folder first.`);
      } else if (failure instanceof ApiError && (failure.status === 409 || failure.code === "ALREADY_EXISTS")) {
        setError(`Something called "${moving.name}" is already in ${where}. Rename one of them first.`);
      } else {
        setError(plain(failure));
      }
    }
  };

  const startClone = async (event: TargetedEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (!cloneForm || !base) return;
    const url = cloneForm.url.trim();
    if (!url) {
      setError("Enter the address of the repository to clone.");
      return;
    }
    if (cloneForm.to.split("/").some((part) => part === "..")) {
      setError('Enter a folder path from your home folder, without "..".');
      return;
    }
    const destination = clean(cloneForm.to) || join(folder, repositoryName(url));
    setError("");
    setNotice("");
    const progress: CloneProgress = { state: "running", phase: "GIT_CLONE_PHASE_UNSPECIFIED", percent: 0, overall: 0, steps: [], destination };
    setClone(progress);
    let current = progress;
    try {
      await apiStream<GitCloneResponse>(`${base}/GitClone`, { repositoryUrl: url, destinationPath: destination }, (line) => {
        const phase = line.phase ?? "GIT_CLONE_PHASE_UNSPECIFIED";
        const percent = Math.max(0, Math.min(100, line.percent ?? 0));
        const { from, to } = CLONE_PHASES[phase] ?? CLONE_PHASES.GIT_CLONE_PHASE_UNSPECIFIED;
        current = {
          ...current,
          phase,
          percent,
          overall: Math.max(current.overall, Math.round(from + ((to - from) * percent) / 100)),
          steps: current.steps.includes(phase) ? current.steps : [...current.steps, phase],
          destination: line.destination?.path || current.destination,
        };
        setClone(current);
      });
      if (current.phase !== "GIT_CLONE_PHASE_DONE") throw new ApiError(0, "UNKNOWN", "The clone stopped before it was complete");
      current = { ...current, state: "done", overall: 100, percent: 100 };
      setClone(current);
      setCloneForm(null);
      setNotice(`Cloned ${url} into "${current.destination}".`);
    } catch (failure) {
      setClone({ ...current, state: "failed", error: cloneError(failure) });
    }
    reload();
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
        for (const file of Array.from(transfer.files)) pending.push({ relative: clean(file.webkitRelativePath || file.name), file });
      }
    } catch {
      setError("The dropped files could not be read. Try the Upload buttons instead.");
      return;
    }
    void upload(pending);
  };

  const crumbs = folder ? folder.split("/") : [];
  const shownError = error || progressError;

  return (
    <Page testId="files-page" title="Files" wide>
      {!workspaceId && (
        <WorkspaceWait workspace={workspace} waking={waking} stopped={stopped} onRetry={() => setAttempt(attempt + 1)} />
      )}

      <ErrorMessage message={shownError} />
      <p class="notice" role="status" data-testid="files-notice">
        {notice}
      </p>

      {workspaceId && (
        <div class="files-layout">
          <section class="files-tree-panel" aria-labelledby="folders-heading">
            <h2 id="folders-heading" class="files-tree-panel__title">
              Folders
            </h2>
            <FolderTree tree={tree} folder={folder} onOpen={(path) => openFolder(path)} />
          </section>
          <div class="files-main">
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
            <button
              type="button"
              class="button"
              aria-expanded={cloneForm !== null}
              onClick={() => setCloneForm(cloneForm === null ? { url: "", to: "" } : null)}
            >
              Clone a repository
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

          {cloneForm !== null && (
            <form class="inline-form clone-form" onSubmit={startClone} aria-labelledby="clone-heading">
              <h2 id="clone-heading" class="inline-form__title">
                Clone a git repository
              </h2>
              <label for="clone-url">Repository</label>
              <p class="hint" id="clone-url-hint">
                An https:// address (for example https://github.com/owner/project), or the path of a repository in your
                files (for example src/project).
              </p>
              <input
                ref={cloneInput}
                id="clone-url"
                type="text"
                inputMode="url"
                autocomplete="off"
                spellcheck={false}
                aria-describedby="clone-url-hint"
                value={cloneForm.url}
                onInput={(event) => setCloneForm({ ...cloneForm, url: event.currentTarget.value })}
                onKeyDown={(event) => {
                  if (event.key === "Escape") setCloneForm(null);
                }}
              />
              <label for="clone-to">Into folder (optional)</label>
              <p class="hint" id="clone-to-hint">
                A new folder, from your home folder. Left empty: "{join(folder, repositoryName(cloneForm.url.trim() || "repository"))}".
              </p>
              <input
                id="clone-to"
                type="text"
                autocomplete="off"
                spellcheck={false}
                aria-describedby="clone-to-hint"
                value={cloneForm.to}
                onInput={(event) => setCloneForm({ ...cloneForm, to: event.currentTarget.value })}
                onKeyDown={(event) => {
                  if (event.key === "Escape") setCloneForm(null);
                }}
              />
              <div class="inline-form__row">
                <button type="submit" class="button button--primary" disabled={clone?.state === "running"}>
                  Clone
                </button>
                <button type="button" class="button" onClick={() => setCloneForm(null)}>
                  Cancel
                </button>
              </div>
            </form>
          )}

          {clone && (
            <section class="clone-progress" aria-labelledby="clone-progress-heading" data-testid="clone-progress" data-state={clone.state}>
              <h2 id="clone-progress-heading">
                {clone.state === "running" ? "Cloning" : clone.state === "done" ? "Cloned" : "Clone failed"}: {clone.destination}
              </h2>
              <label for="clone-bar">
                {clone.state === "failed"
                  ? "Stopped"
                  : `${CLONE_PHASES[clone.phase]?.words ?? "Working"}${clone.state === "running" && clone.percent ? `: ${clone.percent}%` : ""}`}
              </label>
              <progress id="clone-bar" max={100} value={clone.overall} data-testid="clone-bar" />
              <ol class="clone-steps" aria-label="Steps">
                {clone.steps
                  .filter((step) => step !== "GIT_CLONE_PHASE_UNSPECIFIED")
                  .map((step) => (
                    <li key={step} data-phase={step}>
                      {CLONE_PHASES[step]?.words ?? step}
                    </li>
                  ))}
              </ol>
              {clone.state === "failed" && clone.error && (
                <p class="error" role="alert">
                  {clone.error}
                </p>
              )}
              {clone.state !== "running" && (
                <button type="button" class="button button--small" onClick={() => setClone(null)}>
                  Dismiss
                </button>
              )}
            </section>
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
                                setMoving(null);
                                setRenaming({ path, name });
                              }}
                            >
                              Rename
                            </button>
                          )}
                          {!entry.stamped && (
                            <button
                              type="button"
                              class="button button--small"
                              aria-label={`Move ${name}`}
                              aria-expanded={moving?.path === path}
                              onClick={() => {
                                setDeleting(null);
                                setRenaming(null);
                                setMoving(moving?.path === path ? null : { path, name, to: folder });
                              }}
                            >
                              Move
                            </button>
                          )}
                          {!entry.stamped && (
                            <button
                              type="button"
                              class="button button--small button--danger"
                              aria-label={`Delete ${name}`}
                              onClick={() => {
                                setRenaming(null);
                                setMoving(null);
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
                          {moving?.path === path && (
                            <form class="inline-form" onSubmit={move}>
                              <label for="move-to">Move {name} to folder</label>
                              <p class="hint" id="move-to-hint">
                                A folder path from your home folder, such as projects/app; empty for your home folder.
                              </p>
                              <div class="inline-form__row">
                                <input
                                  ref={moveInput}
                                  id="move-to"
                                  type="text"
                                  list="known-folders"
                                  autocomplete="off"
                                  spellcheck={false}
                                  aria-describedby="move-to-hint"
                                  value={moving.to}
                                  onInput={(event) => setMoving({ ...moving, to: event.currentTarget.value })}
                                  onKeyDown={(event) => {
                                    if (event.key === "Escape") setMoving(null);
                                  }}
                                />
                                <button type="submit" class="button button--primary">
                                  Move here
                                </button>
                                <button type="button" class="button" onClick={() => setMoving(null)}>
                                  Cancel
                                </button>
                              </div>
                              <datalist id="known-folders">
                                {knownFolders(tree.children)
                                  .filter((candidate) => candidate !== path && !candidate.startsWith(`${path}/`))
                                  .map((candidate) => (
                                    <option key={candidate} value={candidate} />
                                  ))}
                              </datalist>
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
          </div>
        </div>
      )}
    </Page>
  );
}

/** Every folder the tree has read, by path (for the move form's suggestions). */
function knownFolders(children: TreeChildren): string[] {
  const paths = new Set<string>();
  for (const folders of children.values()) {
    if (Array.isArray(folders)) for (const folder of folders) paths.add(folder.path);
  }
  return Array.from(paths).sort();
}

// So that the path of the URL and the page agree after a programmatic navigation.
export function openFolder(path: string): void {
  navigate(folderHref(path));
}
