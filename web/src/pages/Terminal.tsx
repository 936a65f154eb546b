// "/terminal" with a session: a shell in the person's workspace. Once the workspace runs
// (useWorkspace), xterm.js speaks the supervisor's terminal WebSocket through the edge
// (`/w/<id>/_tidepool/v1/terminal?session_id=&cols=&rows=`): binary frames carry the PTY's
// bytes both ways, text frames TerminalControl JSON (a resize from here, the exit from the
// server). The session id is kept in sessionStorage, so a reload re-attaches to the same shell
// and the supervisor replays its scrollback. A close with 1008 means the session ended.
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import { useEffect, useRef, useState } from "preact/hooks";
import { sessionEnded } from "../api";
import { ErrorMessage, Page } from "../ui";
import { describe, useWorkspace } from "../workspace";

/** WebSocket close code for a policy violation: the edge's "session revoked or expired". */
const SESSION_ENDED = 1008;

type Connection = "waiting" | "connecting" | "connected" | "disconnected";

function storageKey(workspaceId: string): string {
  return `tidepool.terminal.${workspaceId}`;
}

/** This tab's terminal session id for the workspace (letters, digits, '-' and '_', ≤ 64). */
function sessionId(workspaceId: string): string {
  const key = storageKey(workspaceId);
  try {
    const stored = window.sessionStorage.getItem(key);
    if (stored && /^[A-Za-z0-9_-]{1,64}$/.test(stored)) return stored;
  } catch {
    // Storage may be unavailable; a new id is used (no re-attaching after a reload).
  }
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  const id = `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  try {
    window.sessionStorage.setItem(key, id);
  } catch {
    // See above.
  }
  return id;
}

function forgetSessionId(workspaceId: string): void {
  try {
    window.sessionStorage.removeItem(storageKey(workspaceId));
  } catch {
    // Nothing stored then.
  }
}

function terminalUrl(workspaceId: string, session: string, cols: number, rows: number): string {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ session_id: session, cols: String(cols), rows: String(rows) });
  return `${scheme}//${window.location.host}/w/${encodeURIComponent(workspaceId)}/_tidepool/v1/terminal?${query}`;
}

export function TerminalPage() {
  const [attempt, setAttempt] = useState(0);
  const { workspace, waking, error, stopped } = useWorkspace(attempt);
  const [connection, setConnection] = useState<Connection>("waiting");
  const [exitCode, setExitCode] = useState<number | undefined>(undefined);
  const [generation, setGeneration] = useState(0);
  const container = useRef<HTMLDivElement>(null);
  const terminal = useRef<{ term: Terminal; fit: FitAddon } | null>(null);

  // One xterm for the page's lifetime; it follows the window's size.
  useEffect(() => {
    const element = container.current;
    if (!element) return undefined;
    const term = new Terminal({
      cursorBlink: true,
      convertEol: false,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      scrollback: 5000,
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(element);
    fit.fit();
    terminal.current = { term, fit };
    const onResize = () => fit.fit();
    window.addEventListener("resize", onResize);
    return () => {
      window.removeEventListener("resize", onResize);
      terminal.current = null;
      term.dispose();
    };
  }, []);

  const workspaceId = workspace?.state === "WORKSPACE_STATE_RUNNING" ? workspace.workspaceId : undefined;

  // The WebSocket: opened once the workspace runs, again on Reconnect.
  useEffect(() => {
    const current = terminal.current;
    if (!workspaceId || !current) return undefined;
    const { term, fit } = current;
    fit.fit();
    // The server replays the scrollback on attaching: start from a clean screen.
    term.reset();
    setConnection("connecting");
    setExitCode(undefined);
    const socket = new WebSocket(terminalUrl(workspaceId, sessionId(workspaceId), term.cols, term.rows));
    socket.binaryType = "arraybuffer";
    const encoder = new TextEncoder();
    let closedHere = false;

    const sendResize = (cols: number, rows: number) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ resize: { cols, rows } }));
    };
    const input = term.onData((data) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
    });
    const binaryInput = term.onBinary((data) => {
      if (socket.readyState !== WebSocket.OPEN) return;
      const bytes = new Uint8Array(data.length);
      for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
      socket.send(bytes);
    });
    const resize = term.onResize(({ cols, rows }) => sendResize(cols, rows));

    socket.onopen = () => {
      setConnection("connected");
      // The window may have changed size while connecting.
      fit.fit();
      sendResize(term.cols, term.rows);
      term.focus();
    };
    socket.onmessage = (event: MessageEvent) => {
      if (event.data instanceof ArrayBuffer) {
        term.write(new Uint8Array(event.data));
        return;
      }
      if (typeof event.data !== "string") return;
      try {
        const control = JSON.parse(event.data) as { exit?: { exitCode?: number; exit_code?: number } };
        if (control.exit) {
          // The shell is gone; a reconnect starts a new one.
          forgetSessionId(workspaceId);
          setExitCode(control.exit.exitCode ?? control.exit.exit_code ?? 0);
        }
      } catch {
        // Not a control this page knows.
      }
    };
    socket.onclose = (event: CloseEvent) => {
      if (closedHere) return;
      if (event.code === SESSION_ENDED) {
        sessionEnded();
        return;
      }
      setConnection("disconnected");
    };

    return () => {
      closedHere = true;
      input.dispose();
      binaryInput.dispose();
      resize.dispose();
      socket.close(1000);
    };
  }, [workspaceId, generation]);

  const { label, busy } = describe(workspace, waking, stopped);
  const status =
    connection === "connected"
      ? "Connected"
      : connection === "connecting"
        ? "Connecting…"
        : connection === "disconnected"
          ? ""
          : label;

  return (
    <Page testId="terminal-page" title="Terminal" wide>
      <p class="state-line">
        <span data-testid="terminal-status" data-connection={connection} role="status" aria-live="polite">
          {status}
        </span>
      </p>
      {connection === "waiting" && busy && !stopped && <progress class="progress" aria-label="Getting your workspace ready" />}
      <ErrorMessage message={error} />
      {stopped && (
        <button type="button" class="button" onClick={() => setAttempt(attempt + 1)}>
          Try again
        </button>
      )}
      {connection === "disconnected" && (
        <div class="terminal-disconnected">
          <p class="error" role="alert">
            Disconnected{exitCode !== undefined ? ` (the shell exited with code ${exitCode})` : ""}.
          </p>
          <button type="button" class="button button--primary" onClick={() => setGeneration(generation + 1)}>
            Reconnect
          </button>
        </div>
      )}
      <div class="terminal" ref={container} aria-label="Terminal" role="region" data-testid="terminal" />
    </Page>
  );
}
