"""Independent parsers that list what an encoded PNG or JPEG carries besides pixels."""

from __future__ import annotations

import struct

# Chunks / markers that hold pixels or decoding tables, nothing else.
PNG_PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
JPEG_PIXEL_MARKERS = {0xD8, 0xDB, 0xC0, 0xC1, 0xC2, 0xC4, 0xDA, 0xD9, 0xDD, 0xE0}


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return chunks


def jpeg_markers(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, first bytes of its payload) for every marker before the scan data."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    markers, pos = [(0xD8, b"")], 2
    while pos < len(data):
        assert data[pos] == 0xFF, f"lost sync at {pos}"
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        markers.append((marker, data[pos + 4 : pos + 4 + min(length - 2, 16)]))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        pos += 2 + length
    return markers


def metadata_in(data: bytes) -> list[str]:
    """Names of every non-pixel item in a PNG or JPEG; [] means metadata-free."""
    if data[:4] == b"\x89PNG":
        return [c.decode() for c in png_chunks(data) if c not in PNG_PIXEL_CHUNKS]
    found = []
    for marker, payload in jpeg_markers(data):
        if marker not in JPEG_PIXEL_MARKERS:
            found.append(f"marker 0x{marker:02X} {payload[:8]!r}")
        elif marker == 0xE0 and not payload.startswith(b"JFIF\x00"):
            found.append(f"APP0 {payload[:8]!r}")  # JFIF header only; no JFXX thumbnail
    return found
