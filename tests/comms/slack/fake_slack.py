"""A small Slack Web API for the tests: a threaded http.server on 127.0.0.1 (port 0) that answers with the
shapes in Slack's Web API documentation and records every call. SLACK_API_URL points at it.

`script[method]` holds answers to give first, each (status, headers, body): e.g. a 429 with Retry-After,
then a 500. Without one, a method answers `{"ok": true, …}` in its documented shape.
"""

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl


@dataclass
class Call:
    method: str
    args: dict
    headers: dict
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeSlack:
    server: ThreadingHTTPServer = None
    calls: list = field(default_factory=list)
    script: dict = field(default_factory=dict)
    users: dict = field(default_factory=dict)  # Slack id → {"email", "name"}
    messages: dict = field(default_factory=dict)  # (channel, ts) → message
    channels: dict = field(default_factory=dict)  # name → id
    delays: dict = field(default_factory=dict)  # method → seconds to wait before answering (a slow Slack)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/api/"

    def to(self, method):
        """The arguments of every call made to `method`, in order."""
        return [call.args for call in self.calls if call.method == method]

    def methods(self):
        return [call.method for call in self.calls]

    def add_user(self, slack_id, email, name=""):
        self.users[slack_id] = {"email": email, "name": name or email.split("@")[0]}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    # ---- answers in Slack's shapes ----

    def answer(self, method, args):
        with self.lock:
            scripted = self.script.get(method)
            if scripted:
                return scripted.pop(0)
            return 200, {}, self._ok(method, args)

    def _ok(self, method, args):
        n = next(self._ids)
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://example.slack.com/",
                "team": "Example",
                "user": "incidents",
                "team_id": "T0001",
                "user_id": "UBOT",
                "bot_id": "B0001",
            }
        if method == "users.info":
            user = self.users.get(args.get("user"))
            if user is None:
                return {"ok": False, "error": "user_not_found"}
            return {
                "ok": True,
                "user": {
                    "id": args["user"],
                    "name": user["name"],
                    "real_name": user["name"],
                    "profile": {"email": user["email"], "real_name": user["name"]},
                },
            }
        if method == "users.lookupByEmail":
            for slack_id, user in self.users.items():
                if user["email"].lower() == args.get("email", "").lower():
                    return {
                        "ok": True,
                        "user": {
                            "id": slack_id,
                            "name": user["name"],
                            "profile": {"email": user["email"], "real_name": user["name"]},
                        },
                    }
            return {"ok": False, "error": "users_not_found"}
        if method == "conversations.create":
            if args["name"] in self.channels:
                return {"ok": False, "error": "name_taken"}
            channel_id = f"C{n:06d}"
            self.channels[args["name"]] = channel_id
            return {
                "ok": True,
                "channel": {
                    "id": channel_id,
                    "name": args["name"],
                    "is_private": args.get("is_private") in ("1", "true", True),
                },
            }
        if method in ("chat.postMessage", "chat.update"):
            ts = args.get("ts") or f"1700000000.{n:06d}"
            return {"ok": True, "channel": args.get("channel"), "ts": ts, "message": {"text": args.get("text")}}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"1700000000.{n:06d}"}
        if method in ("conversations.history", "conversations.replies"):
            key = (args.get("channel"), args.get("latest") or args.get("ts"))
            message = self.messages.get(key)
            return {"ok": True, "messages": [message] if message else [], "has_more": False}
        if method == "conversations.invite":
            return {"ok": True, "channel": {"id": args.get("channel")}}
        if method == "conversations.setTopic":
            return {"ok": True, "channel": {"id": args.get("channel"), "topic": {"value": args.get("topic")}}}
        if method == "views.open":
            return {"ok": True, "view": {"id": f"V{n:06d}", **(args.get("view") or {})}}
        return {"ok": True}


def start_fake_slack(port=0):
    fake = FakeSlack()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            if (self.headers.get("Content-Type") or "").startswith("application/json"):
                args = json.loads(raw or "{}")
            else:
                args = dict(parse_qsl(raw))
            method = self.path.rsplit("/", 1)[-1].split("?", 1)[0]
            fake.calls.append(Call(method, args, {k.lower(): v for k, v in self.headers.items()}))
            if fake.delays.get(method):
                time.sleep(fake.delays[method])
            status, headers, body = fake.answer(method, args)
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped waiting (a timeout under test)

        def log_message(self, *args):
            pass

    fake.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    fake.server.daemon_threads = True
    threading.Thread(target=fake.server.serve_forever, daemon=True).start()
    return fake
