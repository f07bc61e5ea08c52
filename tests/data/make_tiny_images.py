"""Writes the two smallest real images the tests use, built byte by byte:

- pixel.png: a 1x1 8-bit grayscale PNG (IHDR, one IDAT, IEND);
- pixel.jpg: a 1x1 baseline grayscale JPEG (DQT, SOF0, two one-code
  Huffman tables, one scan whose two bits say "DC difference 0, end of
  block", EOI).

Run from the repository root: python3 tests/data/make_tiny_images.py
With Pillow installed it also decodes both to prove they are real images.
"""

import pathlib
import struct
import zlib

HERE = pathlib.Path(__file__).parent / "images"


def chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png() -> bytes:
    # width, height, bit depth 8, color type 0 (gray), deflate, adaptive, no interlace
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    # one scanline: filter byte 0, then the gray value
    idat = zlib.compress(b"\x00\x80", 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg() -> bytes:
    dqt = segment(0xDB, b"\x00" + b"\x01" * 64)
    # precision 8, height 1, width 1, one component: id 1, 1x1 sampling, table 0
    sof0 = segment(0xC0, struct.pack(">BHHB", 8, 1, 1, 1) + b"\x01\x11\x00")
    # one code of length 1 ("0") per table: DC category 0, AC end of block
    one_code = bytes([1] + [0] * 15) + b"\x00"
    dht_dc = segment(0xC4, b"\x00" + one_code)
    dht_ac = segment(0xC4, b"\x10" + one_code)
    # one component, DC/AC tables 0, spectral 0..63, no approximation
    sos = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    # "0" (DC diff 0) + "0" (EOB), padded with 1 bits
    scan = b"\x3f"
    return b"\xff\xd8" + dqt + sof0 + dht_dc + dht_ac + sos + scan + b"\xff\xd9"


def main() -> None:
    HERE.mkdir(exist_ok=True)
    images = {"pixel.png": png(), "pixel.jpg": jpeg()}
    for name, data in images.items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
    try:
        import io

        from PIL import Image
    except ImportError:
        print("Pillow not installed: not decoded")
        return
    for name, data in images.items():
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            print(f"{name}: {image.format} {image.size} {image.mode} pixel={image.getpixel((0, 0))}")


if __name__ == "__main__":
    main()
