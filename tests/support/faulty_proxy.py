"""An HTTP proxy in front of the S3 server that misbehaves on request.

The operator is pointed at the proxy, the training Jobs at the server
itself, so a test can make the artifact store throttle, vanish, lose
objects or hand back corrupted bytes for the operator alone, while
everything else keeps working. Faults are matched by method and a path
fragment and consumed one request at a time.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# S3's error documents, as the real service sends them.
ERRORS = {
    503: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    404: ("NoSuchKey", "The specified key does not exist."),
}


@dataclass
class Fault:
    method: str
    fragment: str
    kind: str  # "status" (an S3 error answer), "drop" (close, no answer), "corrupt"
    status: int = 0
    remaining: int = 1
    hits: int = 0
    keep_checksums: bool = False  # "corrupt": leave the store's checksum headers


@dataclass
class FaultyProxy:
    upstream: str
    endpoint: str = ""
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, method: str, fragment: str, status: int, times: int = 1) -> Fault:
        """Answer matching requests with an S3 error (503 SlowDown, 500, 404)."""
        return self._add(Fault(method.upper(), fragment, "status", status, times))

    def drop(self, method: str, fragment: str, times: int = 1) -> Fault:
        """Close matching connections without an answer: a server that is down."""
        return self._add(Fault(method.upper(), fragment, "drop", 0, times))

    def corrupt(
        self, method: str, fragment: str, times: int = 1, keep_checksums: bool = False
    ) -> Fault:
        """Flip one byte in the body of matching answers; the store's checksum
        headers are dropped unless ``keep_checksums`` (then the client's own
        checksum validation sees the damage first)."""
        return self._add(
            Fault(method.upper(), fragment, "corrupt", 0, times, keep_checksums=keep_checksums)
        )

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for fault in self.faults:
                matches = fault.method in (method, "*") and fault.fragment in path
                if matches and fault.remaining > 0:
                    fault.remaining -= 1
                    fault.hits += 1
                    return fault
        return None

    def start(self) -> FaultyProxy:
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the tests read ``requests`` instead."""

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _serve(self) -> None:
                body = self._body()
                fault = proxy._take(self.command, self.path)
                if fault is not None and fault.kind == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None and fault.kind == "status":
                    code, message = ERRORS.get(fault.status, ("Error", "injected"))
                    document = (
                        '<?xml version="1.0" encoding="UTF-8"?>\n'
                        f"<Error><Code>{code}</Code><Message>{message}</Message>"
                        f"<Resource>{self.path}</Resource></Error>"
                    ).encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(document)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(document)
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in {"transfer-encoding", "content-length", "connection"}
                }
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    answer_headers = answer.getheaders()
                    status = answer.status
                finally:
                    upstream.close()
                if fault is not None and fault.kind == "corrupt" and payload:
                    payload = bytes([payload[0] ^ 0x01]) + payload[1:]
                    if not fault.keep_checksums:
                        # A store that keeps no checksums of its own: only the
                        # reader's SHA-256 can notice.
                        answer_headers = [
                            (k, v)
                            for k, v in answer_headers
                            if not k.lower().startswith("x-amz-checksum-")
                        ]
                self.send_response(status)
                for key, value in answer_headers:
                    if key.lower() not in {"transfer-encoding", "content-length", "connection"}:
                        self.send_header(key, value)
                length = {k.lower(): v for k, v in answer_headers}.get("content-length")
                head = self.command == "HEAD" and length is not None
                self.send_header("Content-Length", str(length if head else len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
