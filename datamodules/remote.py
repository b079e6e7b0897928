"""Shards that are not in a local folder: where they are (URL prefixes, `pipe:` templates, mirrors) and how to read one.

A `data_dir` is a *location*: a local folder, or one of
- a URL prefix `http(s)://host/path`, `gs://bucket/prefix`, `s3://bucket/prefix` (any scheme webdataset's
  `gopen` knows; S3 goes through the `aws` CLI, or `fsspec` with `s3fs` when no CLI is installed): the file
  `train/shard-000003.tar` is `<prefix>/train/shard-000003.tar`;
- a `pipe:` template holding `{shard}`, e.g. `pipe:aws s3 cp s3://b/shards/{shard} -`: `{shard}` is replaced by
  the relative path (`train/manifest.json`, `train/shard-000003.tar`);
- a brace list of equivalent mirrors, e.g. `http://node{1..4}:8000/shards`: shard `i` is read from mirror
  `i mod n`, and every retry moves to the next mirror.

Opening goes through `webdataset.gopen`. What it lacks for exactness lives here: `RetryingStream` resumes a
dropped transfer at the exact byte where it broke (an HTTP `Range` request, or re-reading and discarding the
bytes already delivered where the server or scheme has no ranges), retries with backoff, and hashes every
byte so a shard read to its end is checked against the manifest's sha256.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import shlex
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlparse

log = logging.getLogger(__name__)

# What a broken transfer raises: OSError covers socket errors, urllib's URLError/HTTPError and the IOError that
# webdataset's Pipe raises for a command's bad exit status (curl exit 18: partial transfer); http.client's
# HTTPException covers protocol errors mid-body.
def _retryable() -> tuple[type[BaseException], ...]:
    import http.client

    return (OSError, http.client.HTTPException, EOFError)


CURL_EXITS = {6: "could not resolve the host", 7: "could not connect", 18: "transfer cut short",
              22: "HTTP error status, e.g. 404", 28: "timed out", 56: "connection reset"}


def describe(error: BaseException) -> str:
    """A readable cause: webdataset's Pipe reports a command's exit as a repr of its arguments."""
    text = str(error)
    status = re.search(r"exit (-?\d+) \(read\)", text)
    if status is None:
        return text
    program = re.search(r"\(\(\[?'([^'\s]+)", text)
    name = program.group(1) if program else "the command"
    code = int(status.group(1))
    hint = CURL_EXITS.get(code, "") if name == "curl" else ""
    return f"{name} exited with status {code}" + (f": {hint}" if hint else "")


class ShardReadError(OSError):
    """A shard could not be read after the retries; names the URL and the byte offset where it broke.

    `str()` stays the message even after webdataset's iterators append context to `args`.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_remote(data_dir: str) -> bool:
    """True for URLs and `pipe:` specs; local paths (and `file://` URLs) are read by the random-access reader."""
    text = str(data_dir)
    return text.startswith("pipe:") or ("://" in text and not text.startswith("file://"))


def local_path(data_dir: str) -> str:
    """A local location as a plain path (`file:///data/shards` -> `/data/shards`)."""
    text = str(data_dir)
    return urlparse(text).path if text.startswith("file://") else text


@dataclass(frozen=True)
class ShardLocation:
    """Where a split's files are, as `spec` says (module docstring), and how hard to try reading them.

    Picklable, so loader workers get it as is. `retries` and `backoff` (seconds before the first retry,
    doubling) apply to every file read from here.
    """

    spec: str
    mirrors: tuple[str, ...]
    retries: int = 3
    backoff: float = 1.0

    @classmethod
    def parse(cls, spec: str, *, retries: int = 3, backoff: float = 1.0) -> ShardLocation:
        import braceexpand

        mirrors = tuple(braceexpand.braceexpand(spec)) if not spec.startswith("pipe:") else (spec,)
        for mirror in mirrors:
            if mirror.startswith("pipe:") and "{shard}" not in mirror:
                raise ValueError(
                    f"data_dir {spec!r}: a pipe: location must hold {{shard}}, the place of the relative path "
                    "(e.g. 'pipe:aws s3 cp s3://bucket/shards/{shard} -')"
                )
        if retries < 0 or backoff < 0:
            raise ValueError(f"retries and retry_backoff must be >= 0, got {retries} and {backoff}")
        return cls(spec, mirrors, retries, backoff)

    def stream(self, relative: str, *, choice: int = 0) -> RetryingStream:
        """A retrying byte stream over `relative`, starting on mirror `choice` and moving on at each retry."""
        return RetryingStream(lambda attempt: self.url(relative, choice=choice + attempt), retries=self.retries,
                              backoff=self.backoff)

    def url(self, relative: str, *, choice: int = 0) -> str:
        """The URL of `relative` (e.g. `train/shard-000003.tar`) on mirror `choice mod n`."""
        mirror = self.mirrors[choice % len(self.mirrors)]
        if "{shard}" in mirror:
            # webdataset runs a `pipe:` command with a shell: the path is one quoted word there, whatever it holds.
            return mirror.replace("{shard}", shlex.quote(relative) if mirror.startswith("pipe:") else relative)
        return mirror.rstrip("/") + "/" + relative


def _s3_stream(url: str) -> BinaryIO:
    """S3 has no webdataset handler: the `aws` CLI through a `pipe:` (webdataset's), else fsspec (s3fs)."""
    import webdataset

    if shutil.which("aws"):
        return webdataset.gopen(f"pipe:aws s3 cp {shlex.quote(url)} -")
    try:
        import fsspec

        return fsspec.open(url, "rb").open()
    except ImportError as error:
        raise OSError(f"{url}: reading s3:// needs the `aws` CLI on PATH, or `pip install s3fs`") from error


def open_at(url: str, offset: int) -> tuple[BinaryIO, int]:
    """Open `url` for reading from byte `offset`; returns the stream and how many leading bytes to discard.

    HTTP(S) at a non-zero offset sends a `Range` request (webdataset's curl opener cannot); a server that
    answers 200 instead of 206 sends everything, so the first `offset` bytes are discarded. Other schemes
    are reopened through `webdataset.gopen` and the delivered bytes discarded.
    """
    import webdataset

    scheme = urlparse(url).scheme if not url.startswith("pipe:") else "pipe"
    if scheme in ("http", "https") and offset > 0:
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"})
        response = urllib.request.urlopen(request, timeout=60)  # noqa: S310 - the user's own data URL
        content_range = response.headers.get("Content-Range", "")
        if response.status == 206 and content_range.startswith(f"bytes {offset}-"):
            return response, 0
        return response, offset
    stream = _s3_stream(url) if scheme == "s3" else webdataset.gopen(url)
    return stream, offset


class ReadAhead:
    """Reads a stream in a background thread, up to `ahead` chunks in advance, so transfer overlaps decoding.

    Without it a loader in the main process (or a worker) waits for the network between samples. `read`
    may return fewer bytes than asked (tar readers loop); errors of the transfer are raised by `read`.
    """

    def __init__(self, raw: Any, *, chunk: int = 1 << 18, ahead: int = 16) -> None:
        self._queue: queue.Queue = queue.Queue(ahead)
        self._buffer = b""
        self._offset = 0
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(raw, chunk), daemon=True)
        self._thread.start()

    def _pump(self, raw: Any, chunk: int) -> None:
        read = getattr(raw, "read1", raw.read)  # what is there now: closing never waits for a whole chunk
        try:
            while not self._stop.is_set():
                data = read(chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the reading thread, which decides
            self._put(error)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        if self._offset >= len(self._buffer):
            if self._done:
                return b""
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
                return b""
            self._buffer, self._offset = item, 0
        end = len(self._buffer) if size < 0 else self._offset + size
        data = self._buffer[self._offset : end]
        self._offset += len(data)
        return data

    def stop(self) -> None:
        self._stop.set()


def close_quietly(stream: Any) -> None:
    """Close a stream we stop reading early: the exit status of a command cut off mid-output means nothing."""
    try:
        stream.close()
    except (OSError, ValueError) as error:
        log.debug("closing %s early: %s", stream, error)


class RetryingStream:
    """A read-only byte stream over `urls(attempt)` that survives dropped transfers, for tar iterators.

    A failed read (an exception, or an end of data that the transfer reports as incomplete: a command's bad
    exit status, fewer bytes than the HTTP Content-Length) reopens at the byte reached, after
    `backoff * 2**k` seconds, at most `retries` times in a row without progress; then `ShardReadError`
    names the URL and the offset. `sha256` is the digest of every byte delivered, i.e. of the whole file once
    it has been read to the end from byte 0.
    """

    def __init__(self, urls: Callable[[int], str], *, retries: int = 3, backoff: float = 1.0,
                 opener: Callable[[str, int], tuple[BinaryIO, int]] = open_at) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.urls = urls
        self.retries = retries
        self.backoff = backoff
        self.opener = opener
        self.position = 0
        self.retried = 0  # reopenings over the stream's life (for logs and tests)
        self._failures = 0  # consecutive failures without a byte of progress
        self._attempt = 0
        self._stream: Any = None
        self._raw: Any = None  # what bytes are read from: the stream, or a command's stdout
        self._digest = hashlib.sha256()
        self.finished = False

    @property
    def url(self) -> str:
        return self.urls(self._attempt)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _open(self) -> None:
        from webdataset.gopen import Pipe

        stream, discard = self.opener(self.url, self.position)
        # webdataset's Pipe raises as soon as its command has failed, even on a read that returned good bytes
        # (curl exits 18 right after delivering what arrived): read its stdout and check the exit at the end.
        self._stream = stream
        self._raw = ReadAhead(stream.stream if isinstance(stream, Pipe) else stream)
        while discard > 0:
            chunk = self._raw.read(min(discard, 1 << 20))
            if not chunk:
                self._end_of_data()
                raise EOFError(f"{self.url} ended before byte {self.position} while skipping to it")
            discard -= len(chunk)

    def _end_of_data(self) -> None:
        """At end of data: raise if the transfer was cut short, else mark the stream finished."""
        stream, self._stream = self._stream, None
        self._stop_raw()
        remaining = getattr(stream, "length", None)  # http.client: bytes still promised by Content-Length
        stream.close()  # webdataset's Pipe waits for the command here and raises on a bad exit status
        if remaining:
            raise EOFError(f"connection closed with {remaining} bytes of the response missing")
        self.finished = True

    def read(self, size: int = -1) -> bytes:
        if self.finished or size == 0:
            return b""
        while True:
            try:
                if self._stream is None:
                    self._open()
                data = self._raw.read(size)
                if not data:
                    self._end_of_data()
                    return b""
            except _retryable() as error:
                self._fail(error)
                continue
            self.position += len(data)
            self._digest.update(data)
            self._failures = 0
            return data

    def _fail(self, error: BaseException) -> None:
        self._stop_raw()
        if self._stream is not None:
            close_quietly(self._stream)
            self._stream = None
        self._failures += 1
        url = self.url
        if self._failures > self.retries:
            raise ShardReadError(
                f"{url}: reading failed at byte {self.position} after {self.retries} retries ({describe(error)}); "
                "check that the server is up and the URL is right, then resume the run from its last checkpoint"
            ) from error
        delay = self.backoff * 2 ** (self._failures - 1)
        self._attempt += 1
        self.retried += 1
        log.warning("%s: read failed at byte %d (%s); retry %d/%d in %.1f s from that byte%s", url, self.position,
                    describe(error), self._failures, self.retries, delay,
                    f" on {self.url}" if self.url != url else "")
        time.sleep(delay)

    def _stop_raw(self) -> None:
        if self._raw is not None:
            self._raw.stop()
            self._raw = None

    def close(self) -> None:
        self._stop_raw()
        if self._stream is not None:
            close_quietly(self._stream)
            self._stream = None

    def __str__(self) -> str:
        return f"<RetryingStream {self.url} at byte {self.position}>"


def read_bytes(location: ShardLocation, relative: str) -> bytes:
    """A whole small file (a manifest) from `location`, with the same retries as the shards."""
    stream = location.stream(relative)
    chunks = []
    try:
        while chunk := stream.read(1 << 20):
            chunks.append(chunk)
    finally:
        stream.close()
    return b"".join(chunks)
