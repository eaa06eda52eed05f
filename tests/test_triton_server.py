"""A real tritonserver (the nvidia-pytriton wheel's binary, python backend) serving the test bundle on
loopback: every task matches the local ONNX Runtime runner, 4 concurrent clients get batched encoder
executions, bad requests get error responses while the server stays up, a killed client does not wedge it,
a server that is not there is one line. One server for the module, stopped by its PID.

Runs where nvidia-pytriton and tritonclient are installed (tests/run.sh builds them into .venv-np1: the wheel
pins numpy<2); skipped elsewhere with that reason.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton==0.7.0 not installed (tests/run.sh installs it in .venv-np1)")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")

from _bundle_fixture import shared_bundle  # noqa: E402
from rmpsam_edge.errors import UserError  # noqa: E402
from rmpsam_edge.preprocess import load_image  # noqa: E402
from rmpsam_edge.runtime import load  # noqa: E402
from rmpsam_edge.runtime.bundle import Bundle  # noqa: E402
from rmpsam_edge.runtime.triton import protocol as P  # noqa: E402
from rmpsam_edge.runtime.triton.client import TritonRunner  # noqa: E402
from rmpsam_edge.runtime.triton.repository import write_repository  # noqa: E402
from rmpsam_edge.runtime.triton.server import TritonServer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = [os.path.join(ROOT, "rmpsam_edge", "assets", "images", n) for n in ("chelsea.jpg", "coffee.jpg")]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    base = tmp_path_factory.mktemp("triton")
    repo = write_repository(Bundle.open(bundle), str(base / "repo"), max_batch=4, queue_delay_us=2000, threads=1)
    log = open(str(base / "server.log"), "w")
    srv = TritonServer(repo, http_port=free_port(), grpc_port=free_port(), log=log)
    srv.start(timeout=90)
    yield srv
    pid = srv.proc.pid
    assert srv.stop() == 0  # a clean SIGTERM exit
    log.close()
    with pytest.raises(OSError):
        os.kill(pid, 0)


@pytest.fixture(scope="module")
def local(bundle):
    return load(bundle, backend="onnxruntime", verbose=False)


def _pair(server, local, url_kind, image):
    remote = load(server.grpc_url if url_kind == "grpc" else server.http_url, verbose=False)
    rgb = load_image(image)
    assert remote.set_image(rgb) == local.set_image(rgb)  # the server's pre-processing: same ImageMeta
    return remote


@pytest.mark.parametrize("url_kind", ["grpc", "http"])
def test_prompts_match_local(server, local, url_kind):
    for image in IMAGES:
        remote = _pair(server, local, url_kind, image)
        h, w = remote.meta.ori_shape
        kw = dict(points=[[w * 0.3, h * 0.4], [w * 0.7, h * 0.6]], boxes=[[5, 5, w * 0.5, h * 0.8]])
        m_r, s_r, l_r = remote.predict(return_logits=True, **kw)
        m_l, s_l, l_l = local.predict(return_logits=True, **kw)
        np.testing.assert_allclose(l_r, l_l, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(s_r, s_l, atol=1e-5)
        assert m_r.shape == (3, h, w) and (m_r != m_l).mean() < 1e-4
        # the same frame id answers a second prompt without sending the frame again
        m2, _ = remote.predict(points=[[w * 0.5, h * 0.5]])
        assert m2.shape == (1, h, w)


def test_panoptic_instances_queries_match_local(server, local):
    for image in IMAGES:
        remote = _pair(server, local, "grpc", image)
        for a, b in zip(remote.object_outputs(), local.object_outputs()):
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
        pr, sr = remote.panoptic(object_mask_thr=0.0, iou_thr=0.0)
        pl, sl = local.panoptic(object_mask_thr=0.0, iou_thr=0.0)
        assert len(sl) > 0 and [s["label"] for s in sr] == [s["label"] for s in sl]
        assert (pr != pl).mean() < 1e-3
        ir, il = remote.instances(), local.instances()  # random weights: often none survive; still equal
        assert list(ir["labels"]) == list(il["labels"]) and ir["masks"].shape == il["masks"].shape
        np.testing.assert_allclose(ir["scores"], il["scores"], atol=1e-4)


def test_no_batching_runs_the_encoder_in_the_composer(bundle, local, tmp_path):
    """max batch 1, one instance: nothing to gain from the encoder model, so the composer runs it in its own
    process (one hop less per frame): same results, and the encoder model is never called."""
    repo = write_repository(Bundle.open(bundle), str(tmp_path / "repo"), max_batch=1, threads=1)
    with open(str(tmp_path / "server.log"), "w") as log:
        srv = TritonServer(repo, http_port=free_port(), grpc_port=free_port(), log=log).start(timeout=90)
        try:
            remote = _pair(srv, local, "grpc", IMAGES[0])
            h, w = remote.meta.ori_shape
            l_r = remote.predict(points=[[w * 0.3, h * 0.4]], return_logits=True)[2]
            l_l = local.predict(points=[[w * 0.3, h * 0.4]], return_logits=True)[2]
            np.testing.assert_allclose(l_r, l_l, atol=1e-4, rtol=1e-4)
            c = grpcclient.InferenceServerClient(srv.grpc_url[len("grpc://"):])
            stats = c.get_inference_statistics(model_name="encoder", as_json=True)["model_stats"][0]
            c.close()
            assert int(stats.get("inference_count", 0)) == 0
        finally:
            assert srv.stop() == 0


def _encoder_batches(server):
    c = grpcclient.InferenceServerClient(server.grpc_url[len("grpc://"):])
    stats = c.get_inference_statistics(model_name="encoder", as_json=True)["model_stats"][0]
    c.close()
    return dict((int(b["batch_size"]), int(b["compute_infer"]["count"])) for b in stats.get("batch_stats", []))


def test_concurrent_clients_are_batched(server):
    frames = [load_image(p) for p in IMAGES]
    before = _encoder_batches(server)
    start, errors, done = threading.Barrier(4), [], []

    def client(k):
        try:
            pred = load(server.grpc_url, verbose=False)
            start.wait(30)
            for i in range(8):
                meta = pred.set_image(frames[(i + k) % 2])
                h, w = meta.ori_shape
                masks, _ = pred.predict(points=[[w // 2, h // 2]])
                assert masks.shape == (1, h, w)
            done.append(k)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and sorted(done) == [0, 1, 2, 3]
    after = _encoder_batches(server)
    batched = sum(n - before.get(b, 0) for b, n in after.items() if b > 1)
    assert batched > 0, "no encoder execution had batch > 1: %s" % after


def _raw(server, task, image, boxes, model=P.COMPOSER, image_dtype="UINT8"):
    c = grpcclient.InferenceServerClient(server.grpc_url[len("grpc://"):])
    feeds = [("TASK", np.array([[task]], np.int32), "INT32"), ("FRAME_ID", np.array([[1]], np.uint64), "UINT64"),
             ("IMAGE", image, image_dtype), ("BOXES", boxes, "FP32")]
    inputs = []
    for name, arr, dtype in feeds:
        t = grpcclient.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        inputs.append(t)
    try:
        return c.infer(model, inputs, client_timeout=60)
    finally:
        c.close()


def test_bad_requests_get_errors_and_server_stays_up(server):
    from tritonclient.utils import InferenceServerException
    img = np.zeros((1, 64, 64, 3), np.uint8)
    no_boxes = np.zeros((1, 0, 4), np.float32)
    bad = [
        (P.ENCODE, img.astype(np.float32), no_boxes, P.COMPOSER, "FP32"),           # wrong dtype
        (P.ENCODE, np.zeros((1, 64, 64, 4), np.uint8), no_boxes, P.COMPOSER, "UINT8"),  # wrong shape
        (P.ENCODE, np.zeros((1, 0, 0, 3), np.uint8), no_boxes, P.COMPOSER, "UINT8"),    # empty image
        (P.PROMPTS, np.zeros((1, 0, 0, 3), np.uint8), np.full((1, 10000, 4), 0.5, np.float32), P.COMPOSER, "UINT8"),
        (P.PROMPTS, np.zeros((1, 0, 0, 3), np.uint8), np.full((1, 1, 3), 0.5, np.float32), P.COMPOSER, "UINT8"),
        (P.OBJECTS, np.zeros((1, 0, 0, 3), np.uint8), no_boxes, P.COMPOSER, "UINT8"),   # frame never sent
        (P.ENCODE, img, no_boxes, "no_such_model", "UINT8"),                             # unknown model
    ]
    for args in bad:
        with pytest.raises(InferenceServerException):
            _raw(server, *args)
    with pytest.raises(InferenceServerException, match="at most 1000"):
        _raw(server, *bad[3])
    assert server.ready() and server.proc.poll() is None
    assert _raw(server, P.ENCODE, img, no_boxes).as_numpy("META").tolist() == [[64, 64, 128, 128, 128, 128]]


def test_killed_client_does_not_wedge_the_server(server, tmp_path):
    script = tmp_path / "client.py"
    script.write_text("import sys, numpy as np\nfrom rmpsam_edge.runtime import load\n"
                      "p = load(sys.argv[1], verbose=False)\nprint('up', flush=True)\n"
                      "while True:\n    p.set_image(np.full((600, 900, 3), 7, np.uint8)); p.object_outputs()\n")
    proc = subprocess.Popen([sys.executable, str(script), server.grpc_url], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"up"
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    pred = load(server.http_url, verbose=False)  # the server still answers after its client was killed
    pred.set_image(load_image(IMAGES[0]))
    assert pred.predict(points=[[10, 10]])[0].shape[0] == 1


def test_no_server_is_one_line_within_timeout():
    with pytest.raises(UserError, match="not answering .* after 2 tries"):
        TritonRunner("grpc://127.0.0.1:%d" % free_port(), timeout=2, retries=1).activate()
    with pytest.raises(UserError, match="grpc://HOST:PORT"):
        TritonRunner("grpc://")


def test_serve_command_up_and_sigterm(bundle, tmp_path):
    http, grpc = free_port(), free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "rmpsam-edge")
    proc = subprocess.Popen([exe, "serve", "--model", bundle, "--http-port", str(http), "--grpc-port", str(grpc)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()  # printed only once health/ready answered
        assert "triton up" in line and "grpc://127.0.0.1:%d" % grpc in line
        pred = load("grpc://127.0.0.1:%d" % grpc, verbose=False)
        assert pred.spec.class_names[:2] == ["person", "car"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 128 + signal.SIGTERM
        assert "tritonserver stopped (exit 0)" in proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    with pytest.raises(UserError, match="not answering"):
        TritonRunner("http://127.0.0.1:%d" % http, timeout=2, retries=0).activate()


def test_tracking_matches_local(server, bundle):
    from rmpsam_edge.runtime import load
    from rmpsam_edge.tracking import VideoTracker
    trackers = [VideoTracker(load(server.grpc_url, verbose=False), score_thr=0.0),
                VideoTracker(load(bundle, "onnxruntime", verbose=False), score_thr=0.0)]
    frames = [load_image(IMAGES[0])[: 200 + 10 * i] for i in range(3)]
    for frame in frames:
        tr, tl = [t.update(frame) for t in trackers]
        assert len(tl) > 0 and [(t.id, t.label) for t in tr] == [(t.id, t.label) for t in tl]


def test_benchmark_streams_against_the_server(server, capsys):
    from rmpsam_edge.cli import main
    assert main(["benchmark", "--model", server.grpc_url, "--streams", "1", "2", "--runs", "2"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "FPS aggregate" in l]
    assert [l.split("streams ")[1].split(":")[0] for l in lines] == ["1", "2"]
    assert all(float(l.split(": ")[1].split(" FPS")[0]) > 0 for l in lines)
