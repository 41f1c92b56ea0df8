"""What the page exposes: address, files outside its own, upload size, a password when asked, flags."""
import http.client
import os
import socket
from urllib.parse import urlsplit

import psutil
import pytest

import app
from ui.serve import MAX_UPLOAD, parse_auth
from tests.support.ports import free_port


def get(url: str, path: str, method: str = "GET", body=None, headers=None):
    """A raw request: the path goes out exactly as written (no client-side `..` clean-up)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _serve(outputs, **launch_kw):
    from ui.serve import create_app, launch

    page, worker = create_app("tiny", 128, outputs, app.MODEL_CHOICES)
    _, url, _ = launch(page, worker, outputs, port=free_port(), **launch_kw)
    return page, worker, url


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    outputs = tmp_path_factory.mktemp("outputs")
    (outputs / "mine.txt").write_text("an output")
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("not for the page")
    page, worker, url = _serve(outputs)
    yield page, url, outputs, outside
    page.close()
    worker.close()


def test_listens_on_loopback_only_by_default(server):
    page, url, _, _ = server
    assert page.server_name == "127.0.0.1" and urlsplit(url).hostname == "127.0.0.1"
    args = app.build_parser().parse_args([])
    assert (args.host, args.listen, args.share, args.auth) == ("127.0.0.1", False, False, None)
    port = urlsplit(url).port
    others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family == socket.AF_INET and not a.address.startswith("127.")]
    for address in others:  # another interface of this very machine: nothing answers there
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((address, port)) != 0, f"the page answers on {address}"


def test_outputs_are_served(server):
    _, url, outputs, _ = server
    status, body = get(url, f"/gradio_api/file={outputs / 'mine.txt'}")
    assert (status, body) == (200, b"an output")  # so the refusals below are not a server that serves nothing


@pytest.mark.parametrize("path", [
    "/gradio_api/file=/etc/passwd", "/file=/etc/passwd", "/gradio_api/file=../../../../../../etc/passwd",
    "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/gradio_api/file=%2Fetc%2Fpasswd",
    "/../../../../etc/passwd", "/static/../../../../etc/passwd", "/gradio_api/file=README.md",
    "/gradio_api/file=app.py", "/file=app.py", "/README.md",
])
def test_no_file_outside_is_served(server, path):
    _, url, _, _ = server
    status, body = get(url, path)
    assert status in (400, 403, 404), (path, status)
    assert b"root:" not in body and b"def main" not in body


def test_no_escape_from_the_outputs_folder(server):
    _, url, outputs, outside = server
    (outputs / "link.txt").symlink_to(outside)
    for path in (f"{outputs}/../{outside.parent.name}/{outside.name}", str(outside), str(outputs / "link.txt"),
                 f"{outputs}/../../../../../../etc/passwd", os.path.abspath("README.md")):
        status, body = get(url, f"/gradio_api/file={path}")
        assert status in (400, 403, 404), (path, status)
        assert b"not for the page" not in body and b"root:" not in body


def upload(url, name: str, size: int, headers=None):
    boundary = "fpboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
    return get(url, "/gradio_api/upload", "POST", body,
               {"Content-Type": f"multipart/form-data; boundary={boundary}"} | (headers or {}))


def test_uploads_are_limited_and_named_by_the_server(server):
    _, url, outputs, _ = server
    assert MAX_UPLOAD == "50mb"
    status, body = upload(url, "big.png", 51 * 1024 * 1024)
    assert status == 413, status
    status, body = upload(url, "../../../evil.png", 100)  # a small one goes through, kept under gradio's folder
    assert status == 200, body
    assert b".." not in body and not (outputs.parent / "evil.png").exists()


def test_auth_refuses_unauthenticated_requests(tmp_path):
    (tmp_path / "mine.txt").write_text("an output")
    page, worker, url = _serve(tmp_path, auth=("alice", "s3cret:with:colons"))
    try:
        for path in ("/config", "/gradio_api/info", f"/gradio_api/file={tmp_path / 'mine.txt'}"):
            assert get(url, path)[0] == 401, path
        assert upload(url, "a.png", 10)[0] == 401
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert get(url, "/login", "POST", "username=alice&password=wrong", form)[0] >= 400
        status, _ = get(url, "/login", "POST", "username=alice&password=s3cret%3Awith%3Acolons", form)
        assert status == 200
    finally:
        page.close()
        worker.close()


def test_auth_and_share_flags(capsys):
    assert parse_auth("alice:s3cret:with:colons") == ("alice", "s3cret:with:colons")
    assert parse_auth(None) is None
    for bad in ("alice", ":pw", "alice:"):
        with pytest.raises(ValueError, match="user:password"):
            parse_auth(bad)
    args = app.build_parser().parse_args(["--auth", "nopassword"])
    from ui.serve import serve_command

    assert serve_command(args, app.MODEL_CHOICES) == 2
    assert "user:password" in capsys.readouterr().err


def test_share_prints_a_warning(monkeypatch, tmp_path, capsys):
    import ui.serve as serve

    calls = {}

    def fake_launch(page, worker, outputs, host, port, share, inbrowser, auth):
        calls.update(host=host, share=share, auth=auth)
        raise OSError("stop here")  # no real tunnel, no server

    monkeypatch.setattr(serve, "launch", fake_launch)
    monkeypatch.setattr(serve.signal, "signal", lambda *a: None)
    args = app.build_parser().parse_args(["--share", "--model", "tiny", "--outputs", str(tmp_path)])
    serve.serve_command(args, app.MODEL_CHOICES)
    assert calls == {"host": "127.0.0.1", "share": True, "auth": None}
    assert "warning: --share makes a public" in capsys.readouterr().err
    args = app.build_parser().parse_args(["--model", "tiny", "--outputs", str(tmp_path)])
    serve.serve_command(args, app.MODEL_CHOICES)
    assert calls["share"] is False and "warning" not in capsys.readouterr().err
