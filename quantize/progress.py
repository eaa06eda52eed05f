"""A progress bar for calibration and fidelity loops: tqdm when it is installed, else a few plain lines."""
import sys


def progress(iterable, total: int, desc: str, stream=None):
    """Wrap ``iterable`` (``total`` items) with a progress display on ``stream`` (default stderr)."""
    stream = sys.stderr if stream is None else stream
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain(iterable, total, desc, stream)
    return tqdm(iterable, total=total, desc=desc, file=stream, leave=False, dynamic_ncols=True)


def _plain(iterable, total, desc, stream):
    step = max(1, total // 4)
    for i, item in enumerate(iterable):
        if i % step == 0:
            stream.write("%s: %d/%d\n" % (desc, i, total))
            stream.flush()
        yield item
    stream.write("%s: %d/%d done\n" % (desc, total, total))
    stream.flush()
