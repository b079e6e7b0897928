"""A minimal OpenAI-compatible chat client on the standard library (urllib), for offline data prep.

`POST {endpoint}/chat/completions`; the API key, if the server needs one, comes from the
`OPENAI_API_KEY` environment variable. Rate limits and transient server errors (HTTP 429, 502,
503, 504) are retried `max_retries` times, waiting as the server's `Retry-After` says (else
1 s, 2 s, ...; at most 60 s). Every failure raises `ChatRequestError` with a `kind` ("http",
"network", "format") so that the caller can count it and fall back.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request


class ChatRequestError(RuntimeError):
    """A chat request that gave no usable reply; `kind` is "http", "network" or "format"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ChatClient:
    """Sends one chat completion request and returns the assistant's text."""

    RETRY_STATUS = frozenset({429, 502, 503, 504})
    MAX_WAIT_S = 60.0

    def __init__(
        self,
        endpoint: str,
        model: str,
        timeout_s: float = 60.0,
        api_key: str | None = None,
        max_retries: int = 2,
        retry_wait_s: float = 1.0,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"llm endpoint {endpoint!r}: give a URL such as http://127.0.0.1:8000/v1")
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.max_retries = max_retries
        self.retry_wait_s = retry_wait_s

    def complete(self, messages: list[dict[str, str]], *, seed: int, temperature: float = 0.7) -> str:
        """The first choice's message content; raises `ChatRequestError` on any failure."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "seed": seed,
            "response_format": {"type": "json_object"},
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as error:
                if error.code not in self.RETRY_STATUS or attempt == self.max_retries:
                    raise ChatRequestError("http", f"{self.url}: HTTP {error.code} {error.reason}") from error
                time.sleep(self._wait_s(error, attempt))
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as error:
                raise ChatRequestError("network", f"{self.url}: {error}") from error
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise ChatRequestError("format", f"{self.url}: not a chat completion response ({error!r})") from error
        if not isinstance(content, str):
            raise ChatRequestError("format", f"{self.url}: message content is {type(content).__name__}, not text")
        return content

    def _wait_s(self, error: urllib.error.HTTPError, attempt: int) -> float:
        """Seconds before retry `attempt + 1`: the server's Retry-After (seconds) if given, else doubling."""
        header = error.headers.get("Retry-After") if error.headers else None
        try:
            wait = float(header) if header is not None else self.retry_wait_s * 2**attempt
        except ValueError:  # an HTTP date: not worth parsing for a retry
            wait = self.retry_wait_s * 2**attempt
        return min(max(wait, 0.0), self.MAX_WAIT_S)
