"""A real HTTP server on 127.0.0.1 serving a shard folder, with Range support and scripted faults.

`ShardServer(root)` serves `root/<path>` (200, or 206 for `Range: bytes=N-`); `drop_after=N` cuts every shard
response (not manifests; only the first `drops` ones if given) after N body bytes by closing the socket, as a
flaky network does; `die_after=N` cuts
the first shard response after N bytes and then stops listening for good (a server that stays down). Quiet:
no request logging. Usable as a context manager, or run as a script to serve a folder:
`python http_shards.py ROOT PORT`.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class _Handler(BaseHTTPRequestHandler):
    server: ShardServer.HTTPServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        path = owner.root / unquote(urlparse(self.path).path).lstrip("/")
        if not path.is_file() or owner.root.resolve() not in path.resolve().parents:
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and owner.ranges:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        owner.requests.append((path.name, start))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = owner.cut_after(path)
        if cut is None or cut >= len(body):
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
        if owner.die_after is not None:
            threading.Thread(target=owner.stop, daemon=True).start()


class ShardServer:
    """Serve `root` on 127.0.0.1:<free port> from a daemon thread; `url` is the served folder's address."""

    class HTTPServer(ThreadingHTTPServer):
        daemon_threads = True
        owner: ShardServer

    def __init__(self, root: str | Path, *, port: int = 0, ranges: bool = True, drop_after: int | None = None,
                 die_after: int | None = None, drops: int | None = None) -> None:
        self.root = Path(root)
        self.ranges = ranges
        self.drop_after = drop_after
        self.die_after = die_after
        self.drops = drops
        self.requests: list[tuple[str, int]] = []
        self._server = self.HTTPServer(("127.0.0.1", port), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._stopped = False

    def cut_after(self, path: Path) -> int | None:
        if path.suffix != ".tar":
            return None
        if self.drops is not None:
            if self.drops <= 0:
                return None
            self.drops -= 1
        return self.die_after if self.die_after is not None else self.drop_after

    def start(self) -> ShardServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> ShardServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    server = ShardServer(sys.argv[1], port=int(sys.argv[2]))
    print(server.url, flush=True)
    server._server.serve_forever(poll_interval=0.05)
