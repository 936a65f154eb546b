#!/usr/bin/env python3
"""Run inside an openclaw workspace (by tests/web/openclaw.mjs): tries to weaken the agent's
stamped configuration from inside, every way a person in the workspace could, and writes what
happened as JSON to ~/flip.out.

  python3 flip.py WORKSPACE_ID

1. Each dangerous key, flipped in the guarded copy ~/.openclaw/openclaw.json (the file an
   `openclaw` command run without OPENCLAW_CONFIG_PATH edits): restored, and how fast.
2. The same with OpenClaw's own CLI (`openclaw config set`), which writes that copy.
3. The stamp the Gateway reads (/etc/tidepool/openclaw.json): cannot be written at all (the
   platform's file, on a read-only mount).
4. The Gateway, asked without the platform's identity headers: still refuses (its auth mode
   never became the flipped one).
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

HOME = os.path.expanduser("~")
COPY = os.path.join(HOME, ".openclaw", "openclaw.json")
STAMP = "/etc/tidepool/openclaw.json"

# (dotted path, the weakened value)
DANGEROUS = [
    ("gateway.auth.mode", "none"),
    ("gateway.auth.trustedProxy.allowUsers", ["*"]),
    ("gateway.bind", "lan"),
    ("gateway.controlUi.allowedOrigins", ["*"]),
    ("gateway.controlUi.dangerouslyAllowHostHeaderOriginFallback", True),
    ("gateway.terminal.enabled", True),
    ("gateway.http.endpoints.chatCompletions.enabled", True),
    ("tools.exec.mode", "full"),
    ("tools.elevated.enabled", True),
    ("tools.fs.workspaceOnly", False),
    ("tools.deny", []),
    ("env.shellEnv.enabled", True),
    ("commands.bash", True),
    ("hooks.enabled", True),
    ("update.auto.enabled", True),
    ("plugins.allow", []),
    ("browser.enabled", True),
]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def set_path(document, dotted, value):
    node = document
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def wait_restored(original, timeout=5.0):
    """Seconds until the copy holds the original bytes again, or None."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if read(COPY) == original:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.01)
    return None


def gateway_status(workspace_id):
    request = urllib.request.Request(
        f"http://127.0.0.1:18789/w/{workspace_id}/control-ui-config.json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        return opener.open(request, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return str(e)


def main():
    workspace_id = sys.argv[1]
    original = read(COPY)
    results = {"flips": [], "gateway_before": gateway_status(workspace_id)}
    for dotted, value in DANGEROUS:
        document = json.loads(original)
        set_path(document, dotted, value)
        with open(COPY, "w", encoding="utf-8") as f:  # an in-place edit, as an editor would
            f.write(json.dumps(document, indent=2))
        seconds = wait_restored(original)
        results["flips"].append({"key": dotted, "restored": seconds is not None,
                                 "seconds": seconds})
        time.sleep(0.1)  # the guard quarantines after 30 restores a minute
    cli = subprocess.run(
        ["openclaw", "config", "set", "gateway.auth.mode", "none"],
        env={k: v for k, v in os.environ.items()
             if k not in ("OPENCLAW_CONFIG_PATH", "OPENCLAW_CONFIG_READONLY")},
        capture_output=True, text=True, timeout=120)
    seconds = wait_restored(original)
    results["cli"] = {"exit": cli.returncode, "restored": seconds is not None}
    try:
        with open(STAMP, "a", encoding="utf-8") as f:
            f.write("{}")
        results["stamp_write"] = "written"
    except OSError as e:
        results["stamp_write"] = e.strerror
    # Whatever the file's own permissions say, the directory is a read-only mount.
    results["stamp_mount_options"] = ""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields[4] == os.path.dirname(STAMP):
                results["stamp_mount_options"] = fields[5]
    results["gateway_after"] = gateway_status(workspace_id)
    with open(os.path.join(HOME, "flip.out"), "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
