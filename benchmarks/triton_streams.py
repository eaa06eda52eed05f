"""Triton serving vs in-process: 1-stream latency and aggregate FPS at several streams, batching on and off.

    .venv-np1/bin/rmpsam-edge benchmark --preset triton --model BUNDLE --streams 1 2 4 \
        --json benchmarks/results/triton_cpu.json --md benchmarks/results/triton_cpu.md

Starts two real tritonservers on loopback (encoder dynamic batching with max_batch_size 4 = "on", 1 = "off"),
then runs round-robin rounds (so a busy phase of a shared machine hits every configuration alike): in-process
ONNX Runtime 1 stream, and each server with 1, 2, 4 concurrent client streams. One frame = set_image (the
frame goes to the server, features stay there) + one point prompt. ``streams_fps`` also backs
``rmpsam-edge benchmark --model grpc://... --streams 1 2 4``.
"""
import os
import socket
import sys
import tempfile
import threading
import time

import numpy as np

from rmpsam_edge.timing import load_average


def _frames(n_images=2):
    from rmpsam_edge.media import asset_path
    from rmpsam_edge.preprocess import load_image
    here = asset_path("images")
    return [load_image(os.path.join(here, n)) for n in sorted(os.listdir(here))[:n_images]]


def _one_frame(pred, frame):
    meta = pred.set_image(frame)
    h, w = meta.ori_shape
    pred.predict(points=[[w // 2, h // 2]])


def streams_fps(make_predictor, streams, frames_per_stream, frames):
    """``streams`` threads, each with its own predictor, ``frames_per_stream`` frames each, started together.
    -> (aggregate frames per second, per-frame latencies in ms)."""
    preds = [make_predictor() for _ in range(streams)]
    for p in preds:
        _one_frame(p, frames[0])  # warm (connections, server-side sessions)
    lat, errors = [], []
    gate = threading.Barrier(streams + 1)

    def run(k):
        try:
            gate.wait(60)
            for i in range(frames_per_stream):
                t = time.perf_counter()
                _one_frame(preds[k], frames[(i + k) % len(frames)])
                lat.append((time.perf_counter() - t) * 1000.0)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    gate.wait(60)
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return streams * frames_per_stream / wall, lat


def run_remote(urls, streams, frames_per_stream):
    """``rmpsam-edge benchmark --model grpc://... --streams 1 2 4``: aggregate FPS per stream count."""
    from rmpsam_edge.runtime import load
    frames = _frames()
    for url in urls:
        for n in streams:
            fps, lat = streams_fps(lambda: load(url, verbose=False), n, frames_per_stream, frames)
            sys.stdout.write("%s  streams %d: %.2f FPS aggregate, p50 %.1f ms per frame (set_image + 1 point)\n"
                             % (url, n, fps, float(np.median(lat))))
    return 0


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _encoder_batches(url):
    import tritonclient.grpc as grpcclient
    c = grpcclient.InferenceServerClient(url[len("grpc://"):])
    stats = c.get_inference_statistics(model_name="encoder", as_json=True)["model_stats"][0]
    c.close()
    return dict((int(b["batch_size"]), int(b["compute_infer"]["count"])) for b in stats.get("batch_stats", []))


def run(args):
    """-> (report, Markdown): in-process ONNX Runtime vs two local tritonservers, round-robin rounds."""
    from rmpsam_edge.errors import UserError
    if not args.model:
        raise UserError("--preset triton starts local tritonservers for a bundle: pass --model BUNDLE "
                        "(or --model grpc://HOST:PORT to time a running server)")
    args.model = args.model[0]
    from rmpsam_edge.runtime import load
    from rmpsam_edge.runtime.bundle import Bundle
    from rmpsam_edge.runtime.triton.repository import write_repository
    from rmpsam_edge.runtime.triton.server import TritonServer

    frames = _frames()
    bundle = Bundle.open(args.model)
    work = tempfile.mkdtemp(prefix="rmpsam_tbench_")
    servers = {}
    load_before = load_average()
    try:
        for name, mb in (("on", 4), ("off", 1)):
            repo = write_repository(bundle, os.path.join(work, name), max_batch=mb, queue_delay_us=0,
                                    backend="onnxruntime", threads=args.threads, copy_bundle=False)
            servers[name] = TritonServer(repo, http_port=_free_port(), grpc_port=_free_port()).start(120)
        configs = [("in-process", 1, lambda: load(args.model, backend="onnxruntime", threads=args.threads,
                                                  verbose=False))]
        for name in ("on", "off"):
            url = servers[name].grpc_url
            for n in args.streams:
                configs.append(("triton batching %s" % name, n, (lambda u: lambda: load(u, verbose=False))(url)))
        results = dict(((c[0], c[1]), {"fps": [], "lat": []}) for c in configs)
        batches0 = _encoder_batches(servers["on"].grpc_url)
        for r in range(args.rounds):
            for label, n, make in configs:
                fps, lat = streams_fps(make, n, args.frames, frames)
                results[(label, n)]["fps"].append(fps)
                results[(label, n)]["lat"].extend(lat)
                sys.stderr.write("round %d %s x%d: %.2f FPS\n" % (r + 1, label, n, fps))
        batches = _encoder_batches(servers["on"].grpc_url)
        batches = dict((b, c - batches0.get(b, 0)) for b, c in batches.items() if c - batches0.get(b, 0) > 0)
    finally:
        for s in servers.values():
            s.stop()
    rows = []
    base = results[("in-process", 1)]
    base_p50, base_fps = float(np.median(base["lat"])), float(np.median(base["fps"]))
    for (label, n), v in results.items():
        p50 = float(np.median(v["lat"]))
        fps = float(np.median(v["fps"]))
        rows.append({"config": label, "streams": n, "fps_median": round(fps, 2), "fps_rounds": [round(f, 2) for f in v["fps"]],
                     "latency_p50_ms": round(p50, 1), "latency_p90_ms": round(float(np.percentile(v["lat"], 90)), 1),
                     "latency_ratio_vs_in_process": round(p50 / base_p50, 3), "fps_ratio_vs_in_process_1_stream":
                     round(fps / base_fps, 3)})
    spec = bundle.spec()
    out = {"command": " ".join(args.command_argv),
           "bundle": bundle.describe(), "input_size": spec.input_size, "threads_per_model": args.threads,
           "frames_per_stream_per_round": args.frames, "rounds": args.rounds, "queue_delay_us": 0,
           "work_per_frame": "set_image + 1 point prompt", "images": len(frames),
           "load_average_before": load_before, "load_average_after": load_average(), "cpu_count": os.cpu_count(),
           "encoder_executions_by_batch_size_batching_on": dict((str(k), v) for k, v in sorted(batches.items())),
           "rows": rows}
    lines = ["# Triton (python backend, CPU) vs in-process", "", "`%s`" % out["command"], "",
             "%s; %s threads per model; %d rounds x %d frames per stream; load average before %s, after %s "
             "(shared machine: compare ratios)." % (out["bundle"], args.threads, args.rounds, args.frames,
                                                      load_before, out["load_average_after"]), "",
             "Encoder executions by batch size (batching on): %s" % out["encoder_executions_by_batch_size_batching_on"],
             "", "| config | streams | FPS (median of rounds) | p50 ms/frame | p90 | latency / in-process | "
             "FPS / in-process 1 stream |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %d | %.2f | %.1f | %.1f | %.2fx | %.2fx |" % (
            r["config"], r["streams"], r["fps_median"], r["latency_p50_ms"], r["latency_p90_ms"],
            r["latency_ratio_vs_in_process"], r["fps_ratio_vs_in_process_1_stream"]))
    return out, "\n".join(lines)
