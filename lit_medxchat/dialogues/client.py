"""A minimal OpenAI-compatible chat client on the standard library (urllib), for offline data prep.

`POST {endpoint}/chat/completions`; the API key, if the server needs one, comes from the
`OPENAI_API_KEY` environment variable. Every failure raises `ChatRequestError` with a `kind`
("http", "network", "format") so that the caller can count it and fall back.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request


class ChatRequestError(RuntimeError):
    """A chat request that gave no usable reply; `kind` is "http", "network" or "format"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ChatClient:
    """Sends one chat completion request and returns the assistant's text."""

    def __init__(self, endpoint: str, model: str, timeout_s: float = 60.0, api_key: str | None = None) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"llm endpoint {endpoint!r}: give a URL such as http://127.0.0.1:8000/v1")
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")

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
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise ChatRequestError("http", f"{self.url}: HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise ChatRequestError("network", f"{self.url}: {error}") from error
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise ChatRequestError("format", f"{self.url}: not a chat completion response ({error!r})") from error
        if not isinstance(content, str):
            raise ChatRequestError("format", f"{self.url}: message content is {type(content).__name__}, not text")
        return content
