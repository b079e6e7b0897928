"""`lit-medxchat serve`: a web chat for a trained run (reports, questions, CXRs drawn on screen).

    lit-medxchat serve --run-dir runs/chat --diffusion-run runs/diffusion --view-run runs/view-classifier

Listens on 127.0.0.1 (this machine only) unless `--host` says otherwise. The page shows patients' images:
off this machine it asks for a password (`--password-file`; user `--user`, default `medxchat`) and refuses to
start without one unless `--insecure-no-auth` is given. Exit code 2 on bad arguments, a missing password off
localhost, a run folder without a checkpoint or tokenizer, a busy port, or gradio missing.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

INSTALL_HINT = "lit-medxchat serve needs gradio: pip install 'lit-medxchat[serve]'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lit-medxchat serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="chat run folder (checkpoints/, tokenizer/)")
    parser.add_argument("--diffusion-run", "--sd-run-dir", dest="diffusion_run", type=Path, default=None,
                        help="CXR-SD run folder, to draw the <Xray> prompts of answers")
    parser.add_argument("--view-run", type=Path, default=None,
                        help="view-classifier run folder, to caption uploads with their predicted view")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--max-upload-mb", type=int, default=50, help="largest upload accepted, MB (default 50)")
    parser.add_argument("--max-megapixels", type=float, default=40.0,
                        help="largest image accepted, megapixels (default 40; checked before decoding)")
    parser.add_argument("--max-length", type=int, default=1024,
                        help="prompt length cap in tokens; the oldest turns are dropped to fit (default 1024)")
    parser.add_argument("--password-file", type=Path, default=None,
                        help="file whose first line is the password the page asks for (required off localhost); "
                             "a file, not an option value, so the password never shows in `ps` or shell history")
    parser.add_argument("--user", default="medxchat", help="user name the page asks for (default medxchat)")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="serve off localhost without a password (anyone who reaches the address sees the images)")
    return parser


def read_password(path: Path) -> str:
    """The first line of `path`, stripped; ValueError names the file when it is missing or empty."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ValueError(f"--password-file {path}: cannot read it ({error.strerror})") from error
    password = lines[0].strip() if lines else ""
    if len(password) < 8:
        raise ValueError(f"--password-file {path}: the first line must hold a password of at least 8 characters")
    return password


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_upload_mb < 1 or args.max_megapixels <= 0 or not 0 < args.port < 65536:
        print("lit-medxchat serve: --max-upload-mb, --max-megapixels and --port must be positive "
              "(port below 65536)", file=sys.stderr)
        return 2
    auth = None
    if args.password_file is not None:
        try:
            auth = (args.user, read_password(args.password_file))
        except ValueError as error:
            print(f"lit-medxchat serve: {error}", file=sys.stderr)
            return 2
    elif not _is_loopback(args.host) and not args.insecure_no_auth:
        print(f"lit-medxchat serve: --host {args.host} makes the page reachable from other machines, and it shows "
              "patients' images: give --password-file FILE (its first line is the password), or --insecure-no-auth "
              "to serve without one", file=sys.stderr)
        return 2
    from lit_medxchat.serve.server import resolve_runs, start_server

    try:
        runs = resolve_runs(args.run_dir, args.diffusion_run, args.view_run)
    except FileNotFoundError as error:
        print(f"lit-medxchat serve: {error}", file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is first imported
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        server = start_server(runs, args.host, args.port, device, args.max_upload_mb,
                              int(args.max_megapixels * 1e6), args.max_length, auth=auth)
    except OSError as error:  # the port is taken, or the address is not this machine's
        print(f"lit-medxchat serve: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"lit-medxchat serve: {error}", file=sys.stderr)
        return 2
    if _is_loopback(args.host):
        scope = "this machine only; pass --host 0.0.0.0 to accept other machines"
    elif auth is not None:
        scope = f"reachable from other machines, behind user {args.user!r} and the password of {args.password_file}"
    else:
        scope = "reachable from other machines WITHOUT a password: anyone who can reach this address sees the images"
    print(f"MedXChat chat for {runs.chat.run_dir} at {server.url} (listening on {args.host}: {scope}). "
          "Ctrl-C stops it.", flush=True)
    try:
        server.app.block_thread()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
