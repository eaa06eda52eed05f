"""Image size from the file header, without decoding (a decompression-bomb guard; Python 3.8, no torch).

``header_size(data) -> (width, height) or None`` reads PNG IHDR, JPEG SOFn, GIF, BMP, WebP (VP8/VP8L/VP8X),
TIFF (first IFD) and PNM headers from the first bytes of a file. ``check_pixels(path, data, max_pixels)``
raises one ``UserError`` when the header claims ``max_pixels`` or more, before OpenCV allocates anything.
"""
import struct
from typing import Optional, Tuple

from .errors import UserError

DEFAULT_MAX_PIXELS = 8192 * 8192  # 67 MP: a 12 MP phone photo passes, a 30000x30000 bomb (900 MP) does not


def _jpeg(d) -> Optional[Tuple[int, int]]:
    i = 2
    while i + 9 < len(d):
        if d[i] != 0xFF:
            i += 1
            continue
        marker = d[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        seg = struct.unpack(">H", d[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", d[i + 5:i + 9])
            return w, h
        i += 2 + seg
    return None


def _tiff(d) -> Optional[Tuple[int, int]]:
    e = "<" if d[:2] == b"II" else ">"
    try:
        off = struct.unpack(e + "I", d[4:8])[0]
        n = struct.unpack(e + "H", d[off:off + 2])[0]
        dims = {}
        for k in range(n):
            tag, typ = struct.unpack(e + "HH", d[off + 2 + 12 * k:off + 6 + 12 * k])
            if tag in (256, 257):
                fmt = e + ("H" if typ == 3 else "I")
                dims[tag] = struct.unpack(fmt, d[off + 10 + 12 * k:off + 10 + 12 * k + struct.calcsize(fmt)])[0]
        return (dims[256], dims[257]) if len(dims) == 2 else None
    except (struct.error, KeyError):
        return None


def _pnm(d) -> Optional[Tuple[int, int]]:
    tokens = []
    for line in d[2:4096].split(b"\n"):
        tokens += line.split(b"#")[0].split()
        if len(tokens) >= 2:
            try:
                return int(tokens[0]), int(tokens[1])
            except ValueError:
                return None
    return None


def header_size(d: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) the header declares, or None when the format is not recognised / the header is short."""
    d = bytes(d[:65536])
    try:
        if d[:8] == b"\x89PNG\r\n\x1a\n" and d[12:16] == b"IHDR":
            return struct.unpack(">II", d[16:24])
        if d[:2] == b"\xff\xd8":
            return _jpeg(d)
        if d[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", d[6:10])
        if d[:2] == b"BM":
            w, h = struct.unpack("<ii", d[18:26])
            return abs(w), abs(h)
        if d[:4] == b"RIFF" and d[8:12] == b"WEBP":
            kind = d[12:16]
            if kind == b"VP8X":
                return 1 + int.from_bytes(d[24:27], "little"), 1 + int.from_bytes(d[27:30], "little")
            if kind == b"VP8L":
                b = int.from_bytes(d[21:25], "little")
                return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", d[26:30])
                return w & 0x3FFF, h & 0x3FFF
        if d[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(d)
        if d[:1] == b"P" and d[1:2] in b"123456" and d[1:2]:
            return _pnm(d)
    except struct.error:
        return None
    return None


def check_pixels(path: str, data, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> None:
    """UserError when the header of ``data`` (the file's bytes) claims ``max_pixels`` or more (None: no limit)."""
    if not max_pixels:
        return
    size = header_size(data)
    if size is not None and int(size[0]) * int(size[1]) >= int(max_pixels):
        raise UserError("image %s declares %dx%d = %d pixels, over the limit of %d (a decompression bomb or a "
                        "huge scan); it was not decoded. Downscale it, or raise the limit with --max-pixels %d"
                        % (path, size[0], size[1], int(size[0]) * int(size[1]), max_pixels,
                           int(size[0]) * int(size[1]) + 1))
