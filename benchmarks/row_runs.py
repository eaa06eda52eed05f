"""Open one runner per benchmark row and time every stage with ``timing.measure`` (rows round-robin, warm-up
excluded), plus fidelity vs the FP32 reference row and memory.

    open_row(row, bundle, threads, device, torch_model) -> runner or None (row["status"] says why)
    run_group(rows, image, spec, class_embed, prompts, runs, warmup, progress) -> fills the rows' latencies
    fidelity(rows, spec, images) -> fills fidelity_iou (prompt-mask IoU vs the reference FP32 row)

Memory: ``mem_mb`` is the growth of this process's resident memory (``rmpsam_edge.timing.rss_mb``) while the row's runner was loaded and run
once (all rows share one process so they can be interleaved; a true per-backend peak needs one process per
backend). ``gpu_mb``: see ``gpu_mb``.
"""
import os
import time
from typing import Callable, Dict, Optional

import numpy as np

from rmpsam_edge.errors import UserError

from rmpsam_edge.timing import measure


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


def open_row(row: dict, bundle: Optional[str], threads: Optional[int], device: Optional[str],
             torch_model: Optional[Callable]):
    """Activate the runner of one row; on failure set row["status"] and return None."""
    backend, precision = row["backend"], row["precision"]
    try:
        if backend == "torch":
            try:
                from rmpsam_edge.torch_runner import TorchRunner
            except ImportError as exc:
                row["status"] = "not installed: %s" % _first_line(exc)
                return None
            model, why = torch_model()
            if model is None:
                row["status"] = "skipped: %s" % why
                return None
            runner = TorchRunner(model, threads=threads)
            runner.activate()
            return runner
        from rmpsam_edge.runtime import backends as registry
        row_ = registry.get(backend)
        if row_.name == "tensorrt":  # TensorRT builds its own FP16/INT8 engines from the FP32 bundle
            ok, why = registry.probe(row_, device)
            if not ok:
                row["status"] = "not installed: %s" % why
                return None
            return registry.create(row_, bundle, device=device, threads=threads, precision=precision)
        from rmpsam_edge.runtime import load_runner
        runner, _, _ = load_runner(bundle, backend=row_.name, device=device, threads=threads, verbose=False)
        return runner
    except UserError as exc:
        msg = _first_line(exc)
        row["status"] = ("not installed: %s" % msg) if "not installed" in msg else "failed: %s" % msg
    except Exception as exc:  # noqa: BLE001 - a backend that cannot load is a row status, not a crash
        row["status"] = "failed: %s" % _first_line(exc)
    return None


def prompt_points(meta, n: int) -> np.ndarray:
    """n clicks spread over the image: the first n cells of a ceil(sqrt(n))-per-side grid (ORIGINAL pixels)."""
    import math

    from rmpsam_edge.automatic import grid_points
    side = int(math.ceil(math.sqrt(n)))
    return grid_points(meta.ori_shape[0], meta.ori_shape[1], side)[:n]


def _try(rows, live, stage, make):
    """A trial call per row (a backend that fails on a stage gets a status, not a crash) -> callables."""
    calls = {}
    for key in list(live):
        fn = make(live[key])
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            rows[key]["status"] = "failed at %s: %s" % (stage, _first_line(exc))
            del live[key]
            continue
        calls[key] = fn
    return calls


def run_group(rows: Dict[str, dict], live: Dict[str, dict], image: np.ndarray, spec, class_embed, prompts,
              runs: int, warmup: int, max_seconds: Optional[float], progress: Callable[[str], None],
              frame_stage: bool = True) -> None:
    """Time every stage for the rows in ``live`` (key -> {"runner", "predictor", ...}) on one input size.

    Stages: encoder; prompt decoder with each count in ``prompts`` (one call); object decoder; frame = the
    Predictor end to end (pre-processing, encoder, object decoder, panoptic post-processing; with no vocabulary:
    one click instead; left out with ``frame_stage=False``). Every stage runs its rows round-robin."""
    from rmpsam_edge.preprocess import preprocess, prompts_to_model
    x, meta = preprocess(image, spec)
    for key, st in live.items():
        st["features"] = st["runner"].encode(x)
    stages = [("encoder", "encoder_ms", lambda st: (lambda: st["runner"].encode(x)))]
    for n in prompts:
        boxes = prompts_to_model(prompt_points(meta, n), None, meta)
        stages.append(("prompt x%d" % n, ("prompt_ms", str(n)),
                       (lambda b: lambda st: (lambda: st["runner"].decode_prompts(st["features"], b)))(boxes)))
    stages.append(("object decoder", "object_ms",
                   lambda st: (lambda: st["runner"].decode_objects(st["features"], class_embed))))

    def frame(st):
        pred = st["predictor"]
        center = [[image.shape[1] / 2.0, image.shape[0] / 2.0]]
        st["parts"] = []

        def call():
            pred.set_image(image)
            if pred.spec.class_embed is not None:
                pred.panoptic()
            else:
                pred.predict(points=center)
            st["parts"].append(dict(pred.timings))
        return call
    if frame_stage:
        stages.append(("frame (predictor end to end)", "frame_ms", frame))
    for i, (label, field, make) in enumerate(stages):
        calls = _try(rows, live, label, make)
        if not calls:
            return
        progress("[%d/%d] %s @ %s: %d rows x %d runs (round-robin, %d warm-up)"
                 % (i + 1, len(stages), label, "x".join(map(str, meta.pad_shape)), len(calls), runs, warmup))
        t0 = time.perf_counter()
        res = measure(calls, runs=runs, warmup=max(0, warmup - 1), max_seconds=max_seconds)
        progress("      done in %.1f s: %s" % (time.perf_counter() - t0, ", ".join(
            "%s %.1f ms" % (k, res[k].p50) for k in calls)))
        for key, stats in res.items():
            if isinstance(field, tuple):
                rows[key].setdefault(field[0], {})[field[1]] = stats.to_dict(samples=True)
            else:
                rows[key][field] = stats.to_dict(samples=True)
    for key in live:
        r = rows[key]
        if "frame_ms" in r:
            r["frame_parts_ms"] = frame_parts(live[key]["parts"][-r["frame_ms"]["n"]:])
        r["fps"] = 1000.0 / r["frame_ms"]["p50"] if "frame_ms" in r else None
        r["fps_enc_obj"] = 1000.0 / (r["encoder_ms"]["p50"] + r["object_ms"]["p50"])
        r["input_shape"] = list(meta.pad_shape)


def frame_parts(timings) -> dict:
    """Median ms of each Predictor stage over the timed frames, and the host share: pre-processing, prompt
    conversion and post-processing over the whole frame."""
    keys = ("preprocess", "encoder", "prompts", "decoder", "postprocess")
    med = {k: float(np.median([t.get(k, 0.0) for t in timings])) for k in keys}
    host = med["preprocess"] + med["prompts"] + med["postprocess"]
    total = sum(med.values())
    return dict(med, host_ms=host, total_ms=total, host_share=host / total if total > 0 else float("nan"))


def process_gpu_mb() -> Optional[float]:
    """This process's GPU memory from ``nvidia-smi --query-compute-apps`` (desktop GPUs), else None (no GPU, or
    a Jetson, whose nvidia-smi has no per-process figure)."""
    from rmpsam_edge.runtime.platform_facts import run
    out = run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()) and parts[1].replace(".", "", 1).isdigit():
            return float(parts[1])
    return None


def row_gpu_mb(runner, before: Optional[float]) -> Optional[float]:
    """GPU memory of one row: the runner's own figure (``gpu_memory_mb()``: TensorRT engines + buffers), else the
    growth of this process's GPU memory since ``before`` (``process_gpu_mb`` when the row started)."""
    own = getattr(runner, "gpu_memory_mb", None)
    if callable(own):
        return own()
    after = process_gpu_mb()
    return None if after is None else after - (before or 0.0)


def fidelity(rows: Dict[str, dict], live: Dict[str, dict], ref_key: Optional[str], spec, images) -> None:
    """Prompt-mask IoU of every live row vs the reference row (FP32), on ``images`` with a 4x4 click grid and
    4 boxes each (the quantize report's metric, the one comparator ``runtime.compare.compare_runners``)."""
    if ref_key is None or ref_key not in live:
        return
    from rmpsam_edge.preprocess import preprocess
    from rmpsam_edge.runtime.compare import compare_runners
    from rmpsam_edge.quantize.prompts import sample_prompts
    inputs = [preprocess(img, spec) for img in images]
    prompts = [sample_prompts(m.img_shape, 4, 4, seed=2000 + i) for i, (_, m) in enumerate(inputs)]
    ref = live[ref_key]["runner"]
    for key, st in live.items():
        if key == ref_key:
            rows[key]["fidelity_iou"] = 1.0
            rows[key]["fidelity_ref"] = True
            continue
        m = compare_runners(ref, st["runner"], inputs, prompts, progress_desc="fidelity %s" % key)
        rows[key]["fidelity_iou"] = m["mask_iou_mean"]
        rows[key]["fidelity_worst_decile"] = m["mask_iou_worst_decile"]
        rows[key]["feature_cosine"] = m["feature_cosine"]
