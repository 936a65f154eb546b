#!/usr/bin/env python3
"""A small OpenAI-compatible model server for the OpenClaw tests (stdlib only).

It speaks the real chat-completions wire format: GET /v1/models, and POST /v1/chat/completions,
streamed as server-sent events ("data: {chunk}" lines ending with "data: [DONE]") when the
request asks for "stream": true, else one JSON answer. The reply is deterministic:
"Tidepool test model says: <the last line of the last user message>".

    python3 model_server.py [--port 0] [--key KEY ...]

Prints one JSON line on stdout once listening: {"port": N, "base_url": "http://127.0.0.1:N/v1"}.
Requests need "Authorization: Bearer <key>" with one of the accepted keys (--key, default
"tidepool"); others get 401 in OpenAI's error format. Test control (JSON):
  POST /__test/keys     {"keys": [...]}   replaces the accepted keys
  GET  /__test/requests                    every completion request so far: the key's last 4
                                           characters, the model, the last user message, stream;
                                           and every refused one (key suffix, path)
SIGTERM stops it.
"""

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"keys": {"tidepool"}, "requests": [], "rejected": []}
LOCK = threading.Lock()


def last_user_text(messages):
    """The person's words: the last user message's text, without the runtime notes the tool
    appends as separate parts or lines ("Runtime: agent=main | ...")."""
    for message in reversed(messages or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
        if isinstance(content, str):
            text = "\n".join(line for line in content.splitlines()
                             if not line.startswith("Runtime: "))
            if text.strip():
                return text
    return ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request on stderr
        sys.stderr.write("model_server: " + (fmt % args) + "\n")

    def _send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def _key(self):
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else ""

    def _authorized(self):
        with LOCK:
            if self._key() in STATE["keys"]:
                return True
            STATE["rejected"].append({"key_suffix": self._key()[-4:], "path": self.path})
        self._send_json(401, {"error": {"message": "Incorrect API key provided.",
                                        "type": "invalid_request_error",
                                        "code": "invalid_api_key"}})
        return False

    def do_GET(self):
        if self.path == "/__test/requests":
            with LOCK:
                return self._send_json(200, {"requests": list(STATE["requests"]),
                                             "rejected": list(STATE["rejected"])})
        if self.path == "/v1/models":
            if not self._authorized():
                return None
            return self._send_json(200, {"object": "list", "data": [
                {"id": "tidepool-test", "object": "model", "created": 0, "owned_by": "tidepool"}]})
        return self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})

    def do_POST(self):
        body = self._body()
        if body is None:
            return self._send_json(400, {"error": {"message": "the body is not JSON",
                                                   "type": "invalid_request_error"}})
        if self.path == "/__test/keys":
            with LOCK:
                STATE["keys"] = set(body.get("keys", []))
            return self._send_json(200, {"ok": True})
        if self.path != "/v1/chat/completions":
            return self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})
        if not self._authorized():
            return None
        prompt = last_user_text(body.get("messages"))
        model = body.get("model", "tidepool-test")
        stream = bool(body.get("stream"))
        with LOCK:
            STATE["requests"].append({"key_suffix": self._key()[-4:], "model": model,
                                      "last_user_message": prompt, "stream": stream})
        # The tool wraps the person's words in context; the reply echoes their last line.
        lines = [line for line in prompt.splitlines() if line.strip()]
        text = "Tidepool test model says: " + (lines[-1] if lines else "")
        created = int(time.time())
        if not stream:
            return self._send_json(200, {
                "id": "chatcmpl-tidepool", "object": "chat.completion", "created": created,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

        def chunk(delta, finish=None, usage=None):
            payload = {"id": "chatcmpl-tidepool", "object": "chat.completion.chunk",
                       "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage is not None:
                payload["usage"] = usage
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        for word in text.split(" "):
            chunk({"content": word + " "})
        chunk({}, "stop", {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", action="append", default=None)
    args = parser.parse_args()
    if args.key:
        STATE["keys"] = set(args.key)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"port": port, "base_url": f"http://127.0.0.1:{port}/v1"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
