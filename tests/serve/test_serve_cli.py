"""`lit-medxchat serve` refuses bad run folders before loading anything or binding a port; the header
names the run, its checkpoint and its training data; the task buttons use the training phrasings."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from lit_medxchat.cli import main as top_main
from lit_medxchat.dialogues import templates as T
from lit_medxchat.serve.cli import main as serve_main
from lit_medxchat.serve.run_info import describe_run, header_markdown, serve_command
from lit_medxchat.serve.tasks import draw_request, question_request, report_request


def test_run_folder_without_checkpoint_fails_before_the_server_binds(fit_runs, tmp_path, capsys):
    empty_run = tmp_path / "run"
    (empty_run / "tokenizer").mkdir(parents=True)
    (empty_run / "tokenizer" / "tokenizer_config.json").write_text("{}")
    with socket.socket() as taken:  # had serve tried to bind first, it would report the busy port instead
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert top_main(["serve", "--run-dir", str(empty_run), "--port", str(port)]) == 2
    assert "holds no *.ckpt" in capsys.readouterr().err
    assert serve_main(["--run-dir", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert serve_main(["--run-dir", str(fit_runs.diffusion)]) == 2  # a CXR-SD run is not a chat run
    assert "no tokenizer/" in capsys.readouterr().err
    assert serve_main(["--run-dir", str(fit_runs.chat), "--diffusion-run", str(tmp_path)]) == 2
    assert "holds no *.ckpt" in capsys.readouterr().err


def test_missing_gradio_prints_the_install_hint(fit_runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now fails as if it were not installed
    assert serve_main(["--run-dir", str(fit_runs.chat)]) == 2
    assert "pip install 'lit-medxchat[serve]'" in capsys.readouterr().err


def test_header_names_run_checkpoint_and_training_data(fit_runs):
    from lit_medxchat.inference.pipeline import newest_checkpoint

    checkpoint = newest_checkpoint(fit_runs.chat)
    run = describe_run("chat model", fit_runs.chat, checkpoint)
    manifest = json.loads((fit_runs.shards / "train" / "manifest.json").read_text())
    assert (run.global_step, run.epoch) == (2, 0)
    assert run.data_dir == str(fit_runs.shards) and run.train_samples == manifest["num_samples"]
    header = header_markdown([run])
    assert str(fit_runs.chat.resolve()) in header and f"`{checkpoint.name}` (step 2, epoch 0)" in header
    assert f"{manifest['num_samples']} training samples" in header
    assert serve_command("runs/chat", "runs/sd") == "lit-medxchat serve --run-dir runs/chat --diffusion-run runs/sd"


def test_task_buttons_ask_in_the_training_phrasings():
    assert report_request() in T.REPORT_INSTRUCTIONS
    assert question_request("Pleural Effusion") == "Is there a pleural effusion in this chest X-ray?"
    assert question_request("Edema") == "Is there pulmonary edema in this chest X-ray?"
    assert draw_request("LATERAL", "Pneumothorax") == (
        "Please generate a chest radiograph in the lateral view showing a pneumothorax.")
    assert draw_request("AP", "No Finding") == "Please create an AP view chest radiograph with no abnormal findings."
    with pytest.raises(ValueError, match="unknown view 'OBLIQUE'"):
        draw_request("OBLIQUE", "Edema")
