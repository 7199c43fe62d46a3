"""`progan serve` answers only requests addressed to it (DNS rebinding) and only its own pages'
state-changing requests (cross-site POST/DELETE)."""

import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import closing

import pytest
from fastapi.testclient import TestClient
from helpers import tiny_run

from progan.cli import main
from progan.studio.app import HostCheck, Studio, allowed_hosts, create_app


@pytest.fixture
def studio(tmp_path):
    snapshot = tiny_run(tmp_path / "runs" / "00000-faces", resolution=8)
    with closing(Studio([snapshot], tmp_path / "state")) as s:
        yield s


def guarded(studio, bind="127.0.0.1", port=8000, allow=()):
    app = create_app(studio)
    app.add_middleware(HostCheck, hosts=allowed_hosts(bind, port, list(allow)))
    return TestClient(app, base_url=f"http://127.0.0.1:{port}")


FAVOURITE = {"model": "00000-faces", "seed": 3}


def test_another_host_name_is_refused(studio):
    client = guarded(studio)
    for host in ("evil.example", "evil.example:8000", "127.0.0.1:9999", "localhost.evil.example:8000", ""):
        r = client.get("/api/models", headers={"host": host})
        assert r.status_code == 403 and "not this studio's address" in r.json()["detail"], host
        assert client.post("/api/favourites", json=FAVOURITE, headers={"host": host}).status_code == 403
    assert studio.favourites.items == []


def test_the_served_names_and_allowed_names_are_answered(studio):
    client = guarded(studio, allow=["faces.lan", "proxy.example:443"])
    for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "[::1]:8000", "faces.lan:8000",
                 "proxy.example:443"):  # fmt: skip
        assert client.get("/api/models", headers={"host": host}).status_code == 200, host
    assert client.get("/api/models", headers={"host": "faces.lan:9000"}).status_code == 403
    bound = guarded(studio, bind="192.168.1.5", port=80)
    for host in ("192.168.1.5", "192.168.1.5:80", "localhost"):
        assert bound.get("/api/models", headers={"host": host}).status_code == 200, host


def test_state_changes_from_another_site_are_refused_and_same_origin_works(studio):
    client = guarded(studio)
    for origin in ("http://evil.example", "http://evil.example:8000", "null", "http://127.0.0.1:9999"):
        r = client.post("/api/favourites", json=FAVOURITE, headers={"origin": origin})
        assert r.status_code == 403 and "may not change this studio" in r.json()["detail"], origin
    assert studio.favourites.items == []
    added = client.post("/api/favourites", json=FAVOURITE, headers={"origin": "http://127.0.0.1:8000"})
    assert added.status_code in (200, 201), added.text
    fid = added.json()["id"]
    refused = client.delete(f"/api/favourites/{fid}", headers={"origin": "http://evil.example"})
    assert refused.status_code == 403
    assert len(studio.favourites.items) == 1
    # A GET from another page is harmless (it cannot read the answer): not refused by Origin.
    assert client.get("/api/favourites", headers={"origin": "http://evil.example"}).status_code == 200
    # No Origin at all (curl, scripts): allowed, as the Host is right.
    assert client.delete(f"/api/favourites/{fid}").status_code == 200
    assert studio.favourites.items == []


def test_serve_wires_the_check_and_warns_on_an_open_address(tmp_path, monkeypatch, capsys):
    import uvicorn

    tiny_run(tmp_path / "run", resolution=8)
    served = {}

    class Server:  # uvicorn's, run on the web thread; this one answers nothing and returns
        def __init__(self, config):
            self.config, self.started, self.should_exit = config, False, False

        def handle_exit(self, sig, frame):
            self.should_exit = True

        def run(self):
            app = self.config.app
            # Renders run on the thread that called serve (the main one), not this web thread.
            render_thread = app.state.studio.compute.submit(threading.get_ident).result(timeout=30)
            served.update(app=app, host=self.config.host, port=self.config.port, render_thread=render_thread)
            self.started = True

    monkeypatch.setattr(uvicorn, "Server", Server)
    with pytest.raises(SystemExit) as e:
        main(["serve", str(tmp_path / "run"), "--state-dir", str(tmp_path / "s"), "--host", "0.0.0.0",
              "--port", "8123", "--allow-host", "faces.lan", "--device", "cpu"])  # fmt: skip
    assert e.value.code == 0 and served["host"] == "0.0.0.0" and served["port"] == 8123
    assert served["render_thread"] == threading.main_thread().ident
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(warning) == 1 and "no authentication" in warning[0]
    client = TestClient(served["app"], base_url="http://faces.lan:8123")
    assert client.get("/api/models").status_code == 200
    assert client.get("/api/models", headers={"host": "evil.example:8123"}).status_code == 403
    with pytest.raises(SystemExit) as e:
        main(["serve", str(tmp_path / "run"), "--state-dir", str(tmp_path / "s"), "--device", "cpu"])
    assert e.value.code == 0 and "warning" not in capsys.readouterr().err

    class Taken(Server):  # the port is in use: uvicorn logs why and its run returns unstarted
        def run(self):
            pass

    monkeypatch.setattr(uvicorn, "Server", Taken)
    with pytest.raises(SystemExit) as e:
        main(["serve", str(tmp_path / "run"), "--state-dir", str(tmp_path / "s"), "--device", "cpu"])
    assert e.value.code == 2 and "--port" in capsys.readouterr().err


def test_a_long_running_server_holds_bounded_state(studio):
    # Memory does not grow with the requests served: waiting faces are capped (503 beyond), and
    # the batch log keeps the last BATCH_LOG sizes.
    import threading

    import torch

    from progan.studio.app import BATCH_LOG, Batcher, Busy

    entered, release = threading.Event(), threading.Event()

    class Slow(torch.nn.Module):
        resolution = 4

        def forward(self, z, labels=None):
            entered.set()
            release.wait(10)
            return torch.zeros(len(z), 3, 4, 4)

    b = Batcher(Slow(), torch.device("cpu"), "fp32", max_batch=2, gather=0.0, max_queue=8,
                compute=studio.compute)  # fmt: skip
    try:
        futures = [b.submit(torch.zeros(4), None)]
        assert entered.wait(10)  # the thread renders the first job and waits inside G
        futures += [b.submit(torch.zeros(4), None) for _ in range(8)]
        with pytest.raises(Busy):
            b.submit(torch.zeros(4), None)
        release.set()
        assert all(f.result(timeout=10).shape == (3, 4, 4) for f in futures)
        b.batches += [1] * BATCH_LOG  # as after weeks of serving
        b.submit(torch.zeros(4), None).result(timeout=10)
        assert len(b.batches) == BATCH_LOG
    finally:
        b.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_progan_serve_stops_cleanly_on_ctrl_c_and_sigterm(tmp_path, sig):
    """uvicorn runs on a thread of its own, so it installs no signal handlers: serve's main thread
    (the renders') hands both signals to uvicorn's graceful exit, and the process ends with 0."""
    import httpx

    tiny_run(tmp_path / "run", resolution=8)
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "progan", "serve", str(tmp_path / "run"), "--port", str(port),
           "--state-dir", str(tmp_path / "state")]  # fmt: skip
    # A fresh session, so that SIGINT is not ignored as it is for a shell's background job.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                mid = httpx.get(f"http://127.0.0.1:{port}/api/models", timeout=5).json()[0]["id"]
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the studio never answered"
                time.sleep(0.2)
        page = httpx.get(f"http://127.0.0.1:{port}/api/models/{mid}/faces?seeds=0,1&size=4", timeout=30)
        assert page.status_code == 200 and page.text.count('"png"') == 2
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_the_compute_thread_cancels_what_it_will_never_run():
    """Jobs queued behind stop(), and jobs submitted after it, are cancelled futures: whoever waits
    on them (a Batcher, a web handler) gets CancelledError instead of waiting forever."""
    import concurrent.futures

    from progan.studio.app import ComputeThread

    compute, started, release = ComputeThread(), threading.Event(), threading.Event()
    compute.start()
    busy = compute.submit(lambda: started.set() or release.wait(30) and "done")
    assert started.wait(30)
    compute.stop()
    queued = compute.submit(lambda: "never")
    release.set()
    assert busy.result(timeout=30) == "done"
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result(timeout=30)
    late = compute.submit(lambda: "never")
    assert late.cancelled()
