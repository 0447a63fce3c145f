"""A real OpenAI-compatible chat completions server for tests, on 127.0.0.1.

It answers POST /v1/chat/completions with question/answer pairs taken from the passage in the
prompt (by the same rules as the offline teacher) and counts the calls it served:
GET /stats -> {"calls": N}. `--garbage` makes every answer unparseable.
Run: python tests/openai_server.py --port 0   (prints "PORT <n>" when ready)
"""

import argparse
import json
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nexa_core.teacher import heuristic_pairs

PASSAGE = re.compile(r'"""\n(.*?)\n"""', re.S)


class State:
    calls = 0
    garbage = False
    lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        if self.path == "/stats":
            self._send(200, {"calls": State.calls})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": "not found"}})
            return
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        found = PASSAGE.search(user)
        content = "Sorry, here is some prose instead of JSON." if State.garbage else \
            "```json\n" + json.dumps({"pairs": heuristic_pairs(found.group(1) if found else user)}) + "\n```"
        with State.lock:
            State.calls += 1
        self._send(200, {
            "id": f"chatcmpl-{State.calls}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": len(user.split()), "completion_tokens": len(content.split()),
                      "total_tokens": len(user.split()) + len(content.split())},
        })


class Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 refuses bursts of concurrent clients
    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--garbage", action="store_true")
    args = parser.parse_args()
    State.garbage = args.garbage
    # A parent may hand down SIGTERM as ignored; stopping by PID must still work.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = Server(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
