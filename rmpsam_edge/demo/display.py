"""The demo's window: whether one can be shown here, and opening it (a click adds a point in the prompt modes)."""
import os
import sys

WINDOW = "rmpsam-edge demo"


def display_problem() -> str:
    """Why a window cannot be shown here ('' when it can)."""
    import cv2
    gui = [l for l in cv2.getBuildInformation().splitlines() if l.strip().startswith("GUI:")]
    if gui and "NONE" in gui[0].upper():
        return "this OpenCV has no GUI (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return ""


def open_window(mode) -> None:
    import cv2
    cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    if hasattr(mode, "add_point"):
        def on_mouse(event, x, y, flags, param):
            if event == cv2.EVENT_LBUTTONDOWN:
                mode.add_point(x, y)
        cv2.setMouseCallback(WINDOW, on_mouse)
