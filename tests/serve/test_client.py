"""The served page through gradio's own client on 127.0.0.1: upload, report, follow-up, draw, bad uploads,
two requests at once. Each `Client` is one browser tab (its own conversation)."""

from __future__ import annotations

import html
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serve_dialogues import (
    DRAW,
    DRAW_ANSWER,
    PNEUMOTHORAX_ANSWER,
    REPORT,
    WHERE,
    WHERE_EFFUSION,
    WHERE_PNEUMOTHORAX,
    chat_settings,
)

from lit_medxchat.serve.tasks import question_request, report_request

gradio_client = pytest.importorskip("gradio_client")


def _client(server, tmp_path: Path | None = None):
    return gradio_client.Client(server.url, verbose=False, analytics_enabled=False,
                                download_files=str(tmp_path) if tmp_path else False)


def _upload(client, *paths: Path) -> tuple[list, str]:
    thumbnails, notice, _chat = client.predict([gradio_client.handle_file(str(p)) for p in paths], api_name="/upload")
    return thumbnails, notice


def _texts(message: dict) -> list[str]:
    return [part["text"] for part in message["content"] if part.get("type") == "text"]


def _files(message: dict) -> list[dict]:
    return [part["file"] for part in message["content"] if part.get("type") == "file"]


def _ask(client, text: str) -> list[tuple]:
    """Every streamed output of one /chat call: (chat messages, message box, notice)."""
    job = client.submit(text, *chat_settings(), api_name="/chat")
    job.result(timeout=120)
    return job.outputs()


def _answer(outputs: list[tuple]) -> str:
    messages, _box, notice = outputs[-1]
    assert notice == "", notice
    return html.unescape(_texts(messages[-1])[0])  # the answer; drawn CXRs follow it


def test_upload_shows_thumbnail_with_view_then_report_streams(server, cxr_file):
    client = _client(server)
    thumbnails, notice = _upload(client, cxr_file)
    assert "16-bit-to-8-bit" in notice  # decoded by content and said so
    (thumbnail,) = thumbnails
    assert re.fullmatch(r"cxr\.png: (PA|AP|LATERAL|OTHER) \d+%", thumbnail["caption"]), thumbnail["caption"]
    assert Path(thumbnail["image"]["path"]).is_relative_to(server.workdir.root)  # nothing outside the temp folder

    outputs = _ask(client, report_request())
    assert _answer(outputs) == REPORT
    partial = [html.unescape(" ".join(_texts(messages[-1]))) for messages, _, _ in outputs[1:-1]]
    assert len(partial) >= 3, "the answer was not streamed"
    assert all(REPORT.startswith(text) for text in partial if text != "…"), partial


def test_follow_up_question_is_answered_from_the_previous_turn(server, cxr_file):
    client = _client(server)
    _upload(client, cxr_file)
    assert _answer(_ask(client, report_request())) == REPORT
    assert _answer(_ask(client, WHERE)) == WHERE_EFFUSION

    client.predict(api_name="/new_conversation")  # same image, fresh history: the same words mean another finding
    assert _answer(_ask(client, question_request("Pneumothorax"))) == PNEUMOTHORAX_ANSWER
    assert _answer(_ask(client, WHERE)) == WHERE_PNEUMOTHORAX


def test_draw_request_shows_the_prompt_and_a_synthetic_image_of_the_configured_size(server, fit_runs, tmp_path):
    import yaml
    from PIL import Image

    from lit_medxchat.serve.run_info import newest_config

    client = _client(server, tmp_path)
    outputs = _ask(client, DRAW)
    messages, _, notice = outputs[-1]
    assert notice == ""
    texts = _texts(messages[-1])
    assert html.unescape(texts[0]) == DRAW_ANSWER
    assert "&lt;Xray&gt;" in texts[0]  # shown as written, not swallowed as an HTML tag
    assert "Synthetic CXR" in texts[1]
    (drawn,) = _files(messages[-1])
    size = yaml.safe_load(newest_config(fit_runs.diffusion).read_text())["model"]["init_args"]["image_size"]
    with Image.open(drawn if isinstance(drawn, str) else drawn["path"]) as image:  # downloaded: a local path
        assert image.size == (size, size)
    assert any("drawing the CXR" in " ".join(_texts(m[-1])) for m, _, _ in outputs[:-1])


def test_bad_uploads_get_a_message_and_no_thumbnail(server, cxr_file, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(cxr_file.read_bytes()[:300])
    client = _client(server)
    thumbnails, notice = _upload(client, text, truncated)
    assert thumbnails == []
    assert "notes.png is not an image" in notice
    assert "cut.png" in notice and "truncated" in notice
    # three readable images: the model reads one study (at most two views), so none is guessed at
    thumbnails, notice = _upload(client, cxr_file, cxr_file, cxr_file)
    assert thumbnails == [] and "remove 1" in notice
    # an empty message is refused in the notice, not sent
    messages, _, notice = _ask(client, "   ")[-1]
    assert messages == [] and "type a question" in notice


def test_two_tabs_asking_at_once_both_get_their_answers(server, cxr_file):
    first, second = _client(server), _client(server)
    _upload(first, cxr_file)
    with ThreadPoolExecutor(2) as pool:
        report = pool.submit(lambda: _answer(_ask(first, report_request())))
        draw = pool.submit(lambda: _answer(_ask(second, DRAW)))
        assert report.result(timeout=180) == REPORT
        assert draw.result(timeout=180) == DRAW_ANSWER


def test_server_listens_on_loopback_only(server):
    assert server.url.startswith("http://127.0.0.1:")
