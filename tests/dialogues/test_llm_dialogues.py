"""The optional LLM path against a fake OpenAI-compatible server on 127.0.0.1 (never the internet):
a good reply is used, a malformed reply or an HTTP error falls back to the rules, counted."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lit_medxchat.core.constants import VIEW_SENTENCES, XRAY_END, XRAY_START
from lit_medxchat.dialogues import DialogueBuilder
from lit_medxchat.dialogues.reply import MalformedReply, parse_reply

GOOD_DIALOGUES = {
    "dialogues": [
        {
            "task": "t2i",
            "turns": [
                {"role": "user", "content": "My report mentions a small right pleural effusion. Can I see a PA view?"},
                {
                    "role": "assistant",
                    "content": "Sure. Fluid has collected around the lung. Here it is: "
                    f"{XRAY_START}  {VIEW_SENTENCES['PA']}\nSmall right pleural effusion.{XRAY_END}",
                },
            ],
        },
        {
            "task": "t2i",
            "turns": [
                {"role": "human", "content": "What does right lower lobe consolidation mean?"},
                {"role": "gpt", "content": "It is an area of lung filled with fluid, often pneumonia."},
                {"role": "human", "content": "Show me a lateral view please."},
                {
                    "role": "gpt",
                    "content": f"Here you are: {XRAY_START} {VIEW_SENTENCES['LATERAL']} Right lower lobe "
                    f"consolidation. {XRAY_END}",
                },
            ],
        },
    ]
}


def _completion(content: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()


# Replies of the fake server by the first path segment of the endpoint.
REPLIES: dict[str, tuple[int, bytes]] = {
    "good": (200, _completion(json.dumps(GOOD_DIALOGUES))),
    "fenced": (200, _completion("```json\n" + json.dumps(GOOD_DIALOGUES) + "\n```")),
    "notjson": (200, _completion("Here are three dialogues: 1. Human: hi")),
    "noxray": (
        200,
        _completion(
            json.dumps(
                {
                    "dialogues": [
                        {
                            "task": "t2i",
                            "turns": [
                                {"role": "user", "content": "Show me an effusion."},
                                {"role": "assistant", "content": "An effusion is fluid around the lung."},
                            ],
                        }
                    ]
                }
            )
        ),
    ),
    "notcompletion": (200, b'{"error": "model overloaded"}'),
    "error": (500, b'{"error": "internal"}'),
}


class _Handler(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.requests.append((self.path, body))
        kind = self.path.split("/")[1]
        if kind == "garbage":  # not HTTP at all
            self.wfile.write(b"garbage\r\n\r\n")
            self.close_connection = True
            return
        if kind == "busy":  # rate-limited every other request
            busy = sum(path.startswith("/busy/") for path, _ in _Handler.requests) % 2 == 1
            status, payload = (429, b"{}") if busy else REPLIES["good"]
        else:
            status, payload = REPLIES[kind]
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """urllib sends requests through $http_proxy when set; the fake server is local."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _t2i(dialogues: list[dict]) -> list[dict]:
    return [d for d in dialogues if d["task"] == "t2i"]


def test_good_reply_gives_the_llm_dialogues(server, abnormal_sample):
    _Handler.requests.clear()
    builder = DialogueBuilder(seed=1, llm_endpoint=f"{server}/good/v1", llm_model="tiny-chat", timeout_s=5)
    dialogues = builder.build(**abnormal_sample)
    t2i = _t2i(dialogues)
    assert len(t2i) == 2
    assert t2i[0]["turns"][1]["content"].endswith(
        f"{XRAY_START} {VIEW_SENTENCES['PA']} Small right pleural effusion. {XRAY_END}"
    )
    assert [t["role"] for t in t2i[1]["turns"]] == ["user", "assistant"] * 2
    # The report and VQA dialogues are the rules' whatever the endpoint.
    rules_only = DialogueBuilder(seed=1).build(**abnormal_sample)
    assert [d for d in dialogues if d["task"] != "t2i"] == [d for d in rules_only if d["task"] != "t2i"]
    assert builder.stats["llm_requests"] == builder.stats["llm_ok"] == 1
    assert builder.stats["llm_fallback"] == 0

    (path, body) = _Handler.requests[-1]
    assert path == "/good/v1/chat/completions"
    assert body["model"] == "tiny-chat"
    prompt = body["messages"][-1]["content"]
    parts = ("1. Task description", "2. Human characteristics", "3. Dialogue properties", "4. Report", "5. Example")
    for part in parts:
        assert part in prompt
    assert abnormal_sample["report_text"] in prompt


def test_fenced_json_is_accepted(server, abnormal_sample):
    builder = DialogueBuilder(llm_endpoint=f"{server}/fenced/v1", timeout_s=5)
    assert len(_t2i(builder.build(**abnormal_sample))) == 2
    assert builder.stats["llm_ok"] == 1


@pytest.mark.parametrize(
    ("kind", "counter"),
    [
        ("notjson", "llm_malformed"),
        ("noxray", "llm_malformed"),
        ("notcompletion", "llm_malformed"),
        ("error", "llm_http_error"),
        ("garbage", "llm_network_error"),
    ],
)
def test_bad_replies_fall_back_to_the_rules(server, abnormal_sample, kind, counter):
    builder = DialogueBuilder(seed=2, llm_endpoint=f"{server}/{kind}/v1", timeout_s=5)
    dialogues = builder.build(**abnormal_sample)
    assert dialogues == DialogueBuilder(seed=2).build(**abnormal_sample)
    assert builder.stats[counter] == builder.stats["llm_fallback"] == 1
    assert builder.stats["llm_ok"] == 0


def test_rate_limits_are_retried(server, abnormal_sample):
    _Handler.requests.clear()
    builder = DialogueBuilder(llm_endpoint=f"{server}/busy/v1", timeout_s=5)
    assert len(_t2i(builder.build(**abnormal_sample))) == 2
    assert builder.stats["llm_ok"] == 1
    assert len(_Handler.requests) == 2  # a 429, then the good reply
    _Handler.requests.clear()
    no_retry = DialogueBuilder(llm_endpoint=f"{server}/busy/v1", timeout_s=5, max_retries=0)
    no_retry.build(**abnormal_sample)
    assert no_retry.stats["llm_http_error"] == 1
    assert len(_Handler.requests) == 1


def test_server_errors_are_not_retried(server, abnormal_sample):
    _Handler.requests.clear()
    DialogueBuilder(llm_endpoint=f"{server}/error/v1", timeout_s=5).build(**abnormal_sample)
    assert len(_Handler.requests) == 1


def test_unreachable_server_falls_back_and_warns_once(abnormal_sample, normal_sample, caplog):
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    builder = DialogueBuilder(llm_endpoint=f"http://127.0.0.1:{port}/v1", timeout_s=2)
    with caplog.at_level(logging.WARNING, logger="lit_medxchat.dialogues.builder"):
        for sample in (abnormal_sample, normal_sample, {**abnormal_sample, "key": "again"}):
            assert _t2i(builder.build(**sample))
    assert builder.stats["llm_network_error"] == builder.stats["llm_fallback"] == 3
    warnings = [r for r in caplog.records if "LLM dialogues unusable" in r.getMessage()]
    assert len(warnings) == 1


def test_endpoint_must_be_a_url():
    with pytest.raises(ValueError, match="give a URL"):
        DialogueBuilder(llm_endpoint="localhost:8000")


@pytest.mark.parametrize(
    ("dialogue", "problem"),
    [
        ({"task": "vqa", "turns": []}, "task"),
        ({"turns": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}, "role"),
        ({"turns": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]}, "empty"),
        (
            {"turns": [{"role": "user", "content": "a"}, {"role": "assistant", "content": f"{XRAY_START} PA view"}]},
            "unbalanced",
        ),
        (
            {
                "turns": [
                    {"role": "user", "content": "a"},
                    {
                        "role": "assistant",
                        "content": f"{XRAY_START} {VIEW_SENTENCES['PA']} Effusion. {XRAY_END} and "
                        f"{XRAY_START} {VIEW_SENTENCES['AP']} Effusion. {XRAY_END}",
                    },
                ]
            },
            "2 image blocks",
        ),
        (
            {
                "turns": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": f"{XRAY_START} Effusion. {XRAY_END}"},
                ]
            },
            "view sentence",
        ),
        (
            {
                "turns": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": f"{XRAY_START} {VIEW_SENTENCES['AP']} {XRAY_END}"},
                ]
            },
            "no findings",
        ),
        (
            {
                "turns": [
                    {"role": "user", "content": "Show me a lateral view of a small effusion."},
                    {"role": "assistant", "content": f"{XRAY_START} {VIEW_SENTENCES['PA']} Small effusion. {XRAY_END}"},
                ]
            },
            "asked for the LATERAL view",
        ),
        (
            {
                "turns": [
                    {"role": "user", "content": f"<image> {XRAY_START} {VIEW_SENTENCES['AP']} x {XRAY_END}"},
                    {"role": "assistant", "content": f"{XRAY_START} {VIEW_SENTENCES['AP']} x {XRAY_END}"},
                ]
            },
            "<image>",
        ),
    ],
)
def test_reply_validation_names_the_problem(dialogue, problem):
    with pytest.raises(MalformedReply, match=problem):
        parse_reply(json.dumps({"dialogues": [dialogue]}))


def test_reply_without_dialogues_is_rejected():
    with pytest.raises(MalformedReply, match="dialogues"):
        parse_reply('{"dialogues": []}')
    with pytest.raises(MalformedReply, match="JSON"):
        parse_reply("no json here")
