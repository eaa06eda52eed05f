"""The demo pipeline's last stage: draw one frame's result (with the FPS / stage-time line), write it to the
video and the JSON Lines file, show it."""
import time

import numpy as np

from .display import WINDOW


def stats_text(stats, timings: dict) -> str:
    """'9.8 FPS | enc 80.1 | dec 4.2 | post 3.0 | draw 2.1 ms' for the frame overlay."""
    fps = stats.fps()
    parts = ["%.1f FPS" % fps if fps else "-- FPS"]
    for key, short in (("encoder", "enc"), ("decoder", "dec"), ("postprocess", "post")):
        if key in timings:
            parts.append("%s %.1f" % (short, timings[key]))
    draw = stats.last_ms("draw")
    if draw is not None:
        parts.append("draw %.1f" % draw)
    return " | ".join(parts) + " ms"


class Sink(object):
    """Draws, writes and shows one frame (the pipeline's last stage)."""

    def __init__(self, mode, banner, video=None, jsonl=None, show=False):
        self.mode = mode
        self.banner = banner
        self.video = video
        self.jsonl = jsonl
        self.show = show

    def __call__(self, item, stats) -> bool:
        import cv2
        from rmpsam_edge import visualize
        result = item.result
        t0 = time.perf_counter()
        rgb = item.frame[:, :, ::-1]
        drawn = self.mode.draw(rgb, result, self.banner)
        drawn = visualize.banner(drawn, stats_text(stats, result["timings"]), position="bottom")
        bgr = cv2.cvtColor(np.ascontiguousarray(drawn), cv2.COLOR_RGB2BGR)
        t1 = time.perf_counter()
        stats.add("draw", (t1 - t0) * 1e3)
        if self.video is not None:
            self.video.write(bgr)
        if self.jsonl is not None:
            self.jsonl.write({"frame": item.index, "segments": self.mode.records(result),
                              "timings_ms": {k: round(float(v), 2) for k, v in result["timings"].items()}})
        t2 = time.perf_counter()
        if self.video is not None or self.jsonl is not None:
            stats.add("write", (t2 - t1) * 1e3)
        for key, ms in result["timings"].items():
            stats.add("model." + key, ms)
        if self.show:
            cv2.imshow(WINDOW, bgr)
            key = cv2.waitKey(1) & 0xFF
            stats.add("show", (time.perf_counter() - t2) * 1e3)
            if key in (ord("q"), 27):
                return False
        return True
