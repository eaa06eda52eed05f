"""Media files: which endings count as images and videos, how a folder or a glob lists them (one place for the
demo sources and quantize calibration), and where the sample media and demo weights
shipped with rmpsam_edge live. numpy-free, no torch, Python 3.8."""
import glob
import os
from typing import List, Tuple

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def is_image(path: str) -> bool:
    return str(path).lower().endswith(IMAGE_EXTS)


def is_video(path: str) -> bool:
    return str(path).lower().endswith(VIDEO_EXTS)


def repo_path(path: str) -> str:
    """``path`` relative to the source checkout rmpsam_edge runs from (the folder with pyproject.toml above the
    package) when it lies inside it, else unchanged: results files name no machine's checkout folder."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full = os.path.abspath(str(path))
    if os.path.isfile(os.path.join(root, "pyproject.toml")) and full.startswith(root + os.sep):
        return os.path.relpath(full, root)
    return path


def list_media(source: str) -> Tuple[List[str], List[str]]:
    """A folder (its entries) or a glob pattern (its matches) -> (images, videos): sorted paths of plain files
    (anything else is left out). OSError when the folder cannot be read."""
    if os.path.isdir(source):
        paths = [os.path.join(source, n) for n in os.listdir(source)]
    else:
        paths = glob.glob(source)
    files = sorted(p for p in paths if os.path.isfile(p))
    return [p for p in files if is_image(p)], [p for p in files if is_video(p)]


def asset_path(*parts: str) -> str:
    """A path inside the package's ``assets`` folder: ``asset_path("images", "astronaut.jpg")``; no parts:
    the folder itself."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", *parts)
