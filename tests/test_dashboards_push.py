"""``bayou dashboards push`` against a fake Grafana.

The fake is a small real HTTP server (http.server in a thread, on a free port of 127.0.0.1)
answering the Grafana HTTP API endpoints the push uses, as Grafana documents them: GET and
POST /api/folders, GET /api/dashboards/uid/<uid>, POST /api/dashboards/db. It is a fake
because no Grafana server can run here; what is under test is the push: real HTTP through
grafana-client, the bearer token, idempotency by uid, and the errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bayou.net import free_port
from dashboards.catalog import BUILDERS
from dashboards.push import PushError, push

TOKEN = "glsa_test-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class FakeGrafana:
    """What the fake holds: folders and dashboards by uid, and every request it saw."""

    token: str
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, auth))
            if auth != f"Bearer {self.token}":
                return 401, {"message": "invalid API key"}
            if method == "GET" and path.startswith("/api/folders/"):
                folder = self.folders.get(path.removeprefix("/api/folders/"))
                return (200, folder) if folder else (404, {"message": "folder not found"})
            if method == "POST" and path == "/api/folders":
                if body["uid"] in self.folders:
                    return 409, {"message": "a folder with the same uid already exists"}
                self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"]}
                return 200, self.folders[body["uid"]]
            if method == "GET" and path.startswith("/api/dashboards/uid/"):
                saved = self.dashboards.get(path.removeprefix("/api/dashboards/uid/"))
                return (200, saved) if saved else (404, {"message": "Dashboard not found"})
            if method == "POST" and path == "/api/dashboards/db":
                return self._save(body)
            return 404, {"message": "not found"}

    def _save(self, body: dict[str, Any]) -> tuple[int, Any]:
        board, uid = body["dashboard"], body["dashboard"]["uid"]
        if body.get("folderUid") not in self.folders:
            return 400, {"message": "folder not found"}
        old = self.dashboards.get(uid)
        if old and not body.get("overwrite"):
            return 412, {"status": "name-exists", "message": "dashboard exists"}
        version = old["dashboard"]["version"] + 1 if old else 1
        self.dashboards[uid] = {
            "dashboard": {**board, "version": version},
            "meta": {"folderUid": body["folderUid"]},
        }
        return 200, {
            "id": list(self.dashboards).index(uid) + 1,
            "uid": uid,
            "url": f"/d/{uid}/slug",
            "status": "success",
            "version": version,
            "slug": "slug",
        }


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana(TOKEN)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = fake.handle(
                self.command, self.path, self.headers.get("Authorization"), body
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_push_twice_updates_the_same_dashboards(grafana: FakeGrafana) -> None:
    first = push(grafana.url, TOKEN)
    assert [(p.uid, p.action, p.version) for p in first] == [
        (uid, "created", 1) for uid in BUILDERS
    ]
    second = push(grafana.url, TOKEN)
    assert [(p.uid, p.action, p.version) for p in second] == [
        (uid, "updated", 2) for uid in BUILDERS
    ]
    assert set(grafana.dashboards) == set(BUILDERS)
    assert grafana.folders == {"bayou": {"uid": "bayou", "title": "Bayou"}}
    assert [r for r in grafana.requests if r[:2] == ("POST", "/api/folders")] == [
        ("POST", "/api/folders", f"Bearer {TOKEN}")
    ]
    assert {auth for _, _, auth in grafana.requests} == {f"Bearer {TOKEN}"}
    saved = grafana.dashboards["bayou-fleet"]
    assert saved["meta"]["folderUid"] == "bayou" and saved["dashboard"]["title"] == "Fleet"


def test_a_refused_token_is_a_clear_error(grafana: FakeGrafana) -> None:
    with pytest.raises(PushError) as err:
        push(grafana.url, "wrong-token")
    message = str(err.value)
    assert "HTTP 401" in message and grafana.url in message and "token" in message
    assert "wrong-token" not in message
    assert not grafana.dashboards and not grafana.folders


def test_no_grafana_is_a_clear_error() -> None:
    with pytest.raises(PushError, match="cannot reach Grafana"):
        push(f"http://127.0.0.1:{free_port()}", TOKEN, timeout=2)  # nothing listens there


def _bayou(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BAYOU_")}
    return subprocess.run(
        [sys.executable, "-m", "bayou.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**clean, **env},
    )


def test_bayou_dashboards_push(grafana: FakeGrafana) -> None:
    """The command (a real process): the token from BAYOU_GRAFANA_TOKEN, never printed."""
    ok = _bayou("dashboards", "push", "--url", grafana.url, BAYOU_GRAFANA_TOKEN=TOKEN)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == "created bayou-overview version 1 /d/bayou-overview/slug"
    again = _bayou("dashboards", "push", "--url", grafana.url, "--token", TOKEN)
    assert again.returncode == 0 and "updated bayou-fleet version 2" in again.stdout
    refused = _bayou("dashboards", "push", "--url", grafana.url, "--token", "nope-123")
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    none = _bayou("dashboards", "push", "--url", grafana.url)
    assert none.returncode == 2 and "BAYOU_GRAFANA_TOKEN" in none.stderr
    for run in (ok, again, refused, none):
        assert TOKEN not in run.stdout + run.stderr and "nope-123" not in run.stderr
