"""A loopback fake of the Fireworks control-plane API, so ``eval-protocol create rft`` runs offline.

It answers what Eval Protocol 0.3.33 and the ``fireworks`` SDK call during ``create rft``, with the
response shapes they parse:

- ``GET /verifyApiKey``: 200 with the account id in ``x-fireworks-account-id`` (how the CLI learns the
  account); 401 without a bearer token;
- ``GET|POST|PATCH /v1/accounts/{a}/secrets[/{id}]``: 404 for an unknown secret, ``{"name",
  "keyName"}`` otherwise (the value is kept in :attr:`secrets`, never echoed back);
- ``GET|DELETE /v1/accounts/{a}/evaluators/{id}``: 404 until created, then ``{"name", "state", ...}``;
- ``POST /v1/accounts/{a}/evaluatorsV2``: creates it (state ``BUILDING``);
- ``POST .../evaluators/{id}:getUploadEndpoint``: ``{"filenameToSignedUrls": {file: url}}``, the URL
  pointing back at this server (``PUT /signed-upload/evaluators/{id}/{file}``), where the archive is
  kept in :attr:`uploads`;
- ``POST .../evaluators/{id}:validateUpload``: the evaluator becomes ``ACTIVE`` (so the CLI's poll
  ends at its first look);
- ``POST /v1/accounts/{a}/datasets`` and ``POST .../datasets/{id}:upload`` (multipart ``file``): the
  uploaded JSONL is kept in :attr:`uploads`;
- ``POST /v1/accounts/{a}/reinforcementFineTuningJobs``: the job as sent, named, state
  ``JOB_STATE_CREATING``.

Anything else is a 404 with Google's error shape. Every request is recorded whole
(:attr:`requests`: method, path, query, headers, body bytes), so a test can search every byte that
left the process. A ``ThreadingHTTPServer`` on ``127.0.0.1`` and a free port, in a background thread:
``start()``/``stop()`` or a context manager; the ``fake_fireworks`` fixture starts one and stops it.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["DEFAULT_ACCOUNT", "FakeFireworks", "FireworksRequest", "fake_fireworks"]

DEFAULT_ACCOUNT = "metis-test"
LOCALHOST = "127.0.0.1"
_ACCOUNT = r"/v1/accounts/(?P<account>[^/]+)"


@dataclass(frozen=True)
class FireworksRequest:
    """One request as the fake received it; ``body`` is every byte of it."""

    index: int
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class _Incoming:
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


_Answer = tuple[int, Any, dict[str, str]]  # status, JSON body, extra headers


class FakeFireworks:
    """The fake API (see the module docstring). ``base_url`` is what ``FIREWORKS_API_BASE`` gets."""

    def __init__(self, account_id: str = DEFAULT_ACCOUNT) -> None:
        self.account_id = account_id
        self.requests: list[FireworksRequest] = []
        self.secrets: dict[str, dict[str, Any]] = {}
        self.evaluators: dict[str, dict[str, Any]] = {}
        self.datasets: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, bytes] = {}  # "evaluators/<id>/<file>" or "datasets/<id>/<file>" -> bytes
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = [
            ("GET", r"/verifyApiKey", self._verify),
            ("GET", _ACCOUNT + r"/secrets/(?P<id>[^/:]+)", self._get_secret),
            ("POST", _ACCOUNT + r"/secrets", self._create_secret),
            ("PATCH", _ACCOUNT + r"/secrets/(?P<id>[^/:]+)", self._update_secret),
            ("GET", _ACCOUNT + r"/evaluators/(?P<id>[^/:]+)", self._get_evaluator),
            ("DELETE", _ACCOUNT + r"/evaluators/(?P<id>[^/:]+)", self._delete_evaluator),
            ("POST", _ACCOUNT + r"/evaluatorsV2", self._create_evaluator),
            ("POST", _ACCOUNT + r"/evaluators/(?P<id>[^/:]+):getUploadEndpoint", self._upload_endpoint),
            ("POST", _ACCOUNT + r"/evaluators/(?P<id>[^/:]+):validateUpload", self._validate_upload),
            ("PUT", r"/signed-upload/evaluators/(?P<id>[^/]+)/(?P<file>[^/]+)", self._signed_upload),
            ("POST", _ACCOUNT + r"/datasets", self._create_dataset),
            ("POST", _ACCOUNT + r"/datasets/(?P<id>[^/:]+):upload", self._upload_dataset),
            ("POST", _ACCOUNT + r"/reinforcementFineTuningJobs", self._create_job),
        ]

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeFireworks is not started")
        return f"http://{LOCALHOST}:{self._server.server_address[1]}"

    def start(self) -> FakeFireworks:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-fireworks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeFireworks:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ queries for tests

    def calls(self, method: str, pattern: str) -> list[FireworksRequest]:
        """The recorded requests with this method whose path matches ``pattern`` (a regex, fullmatch)."""
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    def unanswered(self) -> list[FireworksRequest]:
        """Requests that matched no route (a call the fake does not know: the test should fail)."""
        return [r for r in self.requests if r.status == 404 and not any(
            m == r.method and re.fullmatch(p, r.path) for m, p, _ in self._routes)]

    # ------------------------------------------------------------------ dispatch

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        req = _Incoming(query=dict(urllib.parse.parse_qsl(url.query)),
                        headers={k.lower(): v for k, v in handler.headers.items()}, body=body)
        extra: dict[str, str] = {}
        status, payload = 404, _error(404, f"no such route: {handler.command} {url.path}")
        for method, pattern, route in self._routes:
            match = re.fullmatch(pattern, url.path)
            if method == handler.command and match:
                with self._lock:
                    status, payload, extra = route(match.groupdict(), req)
                break
        with self._lock:
            self.requests.append(FireworksRequest(
                index=len(self.requests), method=handler.command, path=url.path, query=req.query,
                headers=req.headers, body=body, status=status))
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    # ------------------------------------------------------------------ routes

    def _verify(self, _: dict[str, str], req: _Incoming) -> _Answer:
        if not req.headers.get("authorization", "").startswith("Bearer "):
            return 401, _error(401, "missing API key"), {}
        return 200, {}, {"x-fireworks-account-id": self.account_id}

    def _name(self, kind: str, ident: str) -> str:
        return f"accounts/{self.account_id}/{kind}/{ident}"

    def _get_secret(self, m: dict[str, str], req: _Incoming) -> _Answer:
        secret = self.secrets.get(m["id"])
        if secret is None:
            return 404, _error(404, f"secret {m['id']} not found"), {}
        return 200, {"name": self._name("secrets", m["id"]), "keyName": secret["keyName"]}, {}

    def _create_secret(self, _: dict[str, str], req: _Incoming) -> _Answer:
        sent = json.loads(req.body)
        ident = str(sent.get("name") or sent["keyName"]).rsplit("/", 1)[-1]
        self.secrets[ident] = {"keyName": sent["keyName"], "value": sent.get("value")}
        return 200, {"name": self._name("secrets", ident), "keyName": sent["keyName"]}, {}

    def _update_secret(self, m: dict[str, str], req: _Incoming) -> _Answer:
        sent = json.loads(req.body)
        self.secrets[m["id"]] = {"keyName": sent["keyName"], "value": sent.get("value")}
        return 200, {"name": self._name("secrets", m["id"]), "keyName": sent["keyName"]}, {}

    def _get_evaluator(self, m: dict[str, str], req: _Incoming) -> _Answer:
        evaluator = self.evaluators.get(m["id"])
        if evaluator is None:
            return 404, _error(404, f"evaluator {m['id']} not found"), {}
        return 200, evaluator, {}

    def _delete_evaluator(self, m: dict[str, str], req: _Incoming) -> _Answer:
        if self.evaluators.pop(m["id"], None) is None:
            return 404, _error(404, f"evaluator {m['id']} not found"), {}
        return 200, {}, {}

    def _create_evaluator(self, _: dict[str, str], req: _Incoming) -> _Answer:
        sent = json.loads(req.body)
        ident = sent["evaluatorId"]
        if ident in self.evaluators:
            return 409, _error(409, f"evaluator {ident} already exists"), {}
        self.evaluators[ident] = {**sent.get("evaluator", {}), "name": self._name("evaluators", ident),
                                  "state": "BUILDING"}
        return 200, self.evaluators[ident], {}

    def _upload_endpoint(self, m: dict[str, str], req: _Incoming) -> _Answer:
        files = json.loads(req.body).get("filenameToSize", {})
        urls = {name: f"{self.base_url}/signed-upload/evaluators/{m['id']}/{urllib.parse.quote(name)}"
                      f"?X-Goog-Signature=fake" for name in files}
        return 200, {"filenameToSignedUrls": urls}, {}

    def _signed_upload(self, m: dict[str, str], req: _Incoming) -> _Answer:
        self.uploads[f"evaluators/{m['id']}/{urllib.parse.unquote(m['file'])}"] = req.body
        return 200, {}, {}

    def _validate_upload(self, m: dict[str, str], req: _Incoming) -> _Answer:
        evaluator = self.evaluators.get(m["id"])
        if evaluator is None:
            return 404, _error(404, f"evaluator {m['id']} not found"), {}
        evaluator["state"] = "ACTIVE"
        return 200, {}, {}

    def _create_dataset(self, _: dict[str, str], req: _Incoming) -> _Answer:
        sent = json.loads(req.body)
        ident = sent["datasetId"]
        self.datasets[ident] = {**sent.get("dataset", {}), "name": self._name("datasets", ident),
                                "state": "UPLOADING"}
        return 200, self.datasets[ident], {}

    def _upload_dataset(self, m: dict[str, str], req: _Incoming) -> _Answer:
        if m["id"] not in self.datasets:
            return 404, _error(404, f"dataset {m['id']} not found"), {}
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {req.headers.get('content-type', '')}\r\n\r\n".encode() + req.body)
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "file":
                filename = part.get_filename() or "file"
                self.uploads[f"datasets/{m['id']}/{filename}"] = bytes(part.get_payload(decode=True))
        self.datasets[m["id"]]["state"] = "READY"
        return 200, {}, {}

    def _create_job(self, _: dict[str, str], req: _Incoming) -> _Answer:
        sent = json.loads(req.body)
        ident = req.query.get("reinforcementFineTuningJobId") or f"rft-{len(self.jobs) + 1}"
        self.jobs[ident] = {**sent, "name": self._name("reinforcementFineTuningJobs", ident),
                            "state": "JOB_STATE_CREATING"}
        return 200, self.jobs[ident], {}


def _error(code: int, message: str) -> dict[str, Any]:
    status = {401: "UNAUTHENTICATED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}.get(code, "UNKNOWN")
    return {"error": {"code": code, "message": message, "status": status}}


@pytest.fixture
def fake_fireworks() -> Iterator[FakeFireworks]:
    """A started :class:`FakeFireworks` (account ``metis-test``); stopped at teardown."""
    with FakeFireworks() as server:
        yield server
