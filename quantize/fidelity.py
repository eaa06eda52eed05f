"""Fidelity of a quantized bundle against its FP32 bundle, on held-out images (numpy only): what the metrics
mean, and latency. The metrics come from the one comparator, ``runtime.compare.compare_runners``.

Metrics (all against FP32, never against ground truth):

* encoder features: cosine similarity (whole tensor) and max |diff| (also relative to FP32 max |value|);
* prompt masks: IoU of the binary masks (logits > 0, upsampled to the resized image as the runtime does) over a
  grid of clicks and a set of boxes per image: mean IoU and worst-decile IoU (the mean of the lowest 10 % of
  the per-prompt IoUs), and the mean over the masks that cover >= 1 % of the image in FP32 (a few-pixel mask
  flips to IoU 0.1 with a handful of pixels, so the plain mean is dominated by tiny masks); IoU-score error (mean |iou_fp32 - iou_quant| of the IoU head);
* object queries (before the panoptic score threshold, so it is informative even when few segments survive
  it): agreement of the 100 queries' argmax class and of the sign of their mask logits (stride 4);
* panoptic: pixel agreement of the class maps (void included) and of the segment maps (quantized segments
  mapped to their matched FP32 segment), and the mean IoU of matched segments (greedy, IoU > 0.5, as PQ);
* size on disk and latency of both bundles, measured in the same run (interleaved, median).

``runtime.compare.verdicts`` checks each metric against the one threshold table (``runtime.compare.THRESHOLDS``:
the documented defaults); ``runtime.compare.gate_metrics`` says which of them decide pass/fail.
"""
from typing import Dict


# ------------------------------------------------------------------------------------------- latency
def latency(runners: Dict[str, object], x, boxes1, class_embed=None, runs: int = 10, warmup: int = 2) -> dict:
    """Median wall ms of encoder / 1-prompt decoder / object decoder for each runner (and, under "cpu_ms", the
    median process CPU ms: with 1 thread it approximates an idle core's latency even when other processes
    compete for the CPU), timed round-robin in one process by ``rmpsam_edge.timing.time_graphs``."""
    from rmpsam_edge.timing import time_graphs
    out = {}
    for n, graphs in time_graphs(runners, x, boxes1, class_embed, runs=runs, warmup=warmup).items():
        out[n] = {g: st.p50 for g, st in graphs.items()}
        out[n]["encoder_plus_prompt_1"] = out[n]["encoder"] + out[n]["prompt_decoder_1"]
        out[n]["cpu_ms"] = {g: st.cpu_p50 for g, st in graphs.items()}
    return out
