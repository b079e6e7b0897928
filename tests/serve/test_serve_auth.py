"""The web chat shows patients' images: off localhost it needs a password, and a client without the login gets
neither the page nor an API answer; a logged-in client still cannot read files outside gradio's upload cache."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from serve_dialogues import free_port

from lit_medxchat.serve.cli import main as serve_main

PASSWORD = "correct-horse-battery"


def _get(url: str, opener=None, data: bytes | None = None) -> tuple[int, str]:
    try:
        with (opener or urllib.request.build_opener()).open(url, data=data, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def test_serving_other_machines_without_a_password_is_refused_before_anything_loads(tmp_path, capsys):
    assert serve_main(["--run-dir", str(tmp_path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--password-file" in err and "--insecure-no-auth" in err and "patients' images" in err
    short = tmp_path / "password"
    short.write_text("abc\n")
    assert serve_main(["--run-dir", str(tmp_path), "--host", "0.0.0.0", "--password-file", str(short)]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert serve_main(["--run-dir", str(tmp_path), "--host", "0.0.0.0", "--password-file",
                       str(tmp_path / "missing")]) == 2
    assert "cannot read it" in capsys.readouterr().err


@pytest.fixture(scope="module")
def guarded_server(fit_runs):
    from lit_medxchat.serve.server import resolve_runs, start_server

    running = start_server(resolve_runs(fit_runs.chat), host="127.0.0.1", port=free_port(), device="cpu",
                           auth=("medxchat", PASSWORD))
    try:
        yield running, fit_runs
    finally:
        running.close()


def test_without_the_login_there_is_no_page_and_no_api_answer(guarded_server):
    server, runs = guarded_server
    status, body = _get(server.url + "/")
    assert status == 200 and str(runs.chat.resolve()) not in body  # gradio's login page, not the chat's header
    for path in ("/config", "/gradio_api/info", "/gradio_api/file=/etc/hostname"):
        assert _get(server.url + path)[0] == 401, path
    status, _ = _get(server.url + "/gradio_api/call/chat", data=json.dumps({"data": []}).encode())
    assert status == 401
    wrong = urllib.parse.urlencode({"username": "medxchat", "password": "guess-guess"}).encode()
    assert _get(server.url + "/login", data=wrong)[0] == 400


def test_a_logged_in_client_gets_the_page_but_no_file_outside_the_upload_cache(guarded_server):
    server, runs = guarded_server
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    login = urllib.parse.urlencode({"username": "medxchat", "password": PASSWORD}).encode()
    assert _get(server.url + "/login", opener, login) == (200, '{"success":true}')
    status, config = _get(server.url + "/config", opener)
    assert status == 200 and runs.chat.name in config
    checkpoint = next((runs.chat / "checkpoints").glob("*.ckpt"))
    for path in ("/etc/hostname", str(checkpoint)):
        assert _get(server.url + "/gradio_api/file=" + path, opener)[0] == 403, path
