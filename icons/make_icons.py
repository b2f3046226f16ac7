"""Renders the Imprint icon (see imprint.svg) to RGBA PNGs without external tools."""
import struct, zlib, sys, os

def png(w, h, px):
    raw = b"".join(b"\x00" + bytes(px[y * w * 4:(y + 1) * w * 4]) for y in range(h))
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")

def render(n):
    s = n / 128.0
    bg, fg, ok = (0x1f, 0x3b, 0x57, 255), (0xe8, 0xee, 0xf4, 255), (0x4c, 0xc3, 0x8a, 255)
    px = [0] * (n * n * 4)
    def put(x, y, c):
        if 0 <= x < n and 0 <= y < n:
            px[(y * n + x) * 4:(y * n + x) * 4 + 4] = c
    def inside_round(x, y, x0, y0, x1, y1, r):
        cx = min(max(x, x0 + r), x1 - r); cy = min(max(y, y0 + r), y1 - r)
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    def dist_seg(px_, py, ax, ay, bx, by):
        dx, dy = bx - ax, by - ay
        t = max(0, min(1, ((px_ - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
        return ((px_ - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2) ** 0.5
    for y in range(n):
        for x in range(n):
            X, Y = (x + 0.5) / s, (y + 0.5) / s
            if not inside_round(X, Y, 8, 8, 120, 120, 20):
                continue
            c = bg
            outer = inside_round(X, Y, 30.5, 26.5, 97.5, 101.5, 9)
            inner = inside_round(X, Y, 37.5, 33.5, 90.5, 94.5, 3)
            if outer and not inner:
                c = fg
            for yy in (44, 60, 76):
                if (22 <= X <= 34 or 94 <= X <= 106) and yy <= Y <= yy + 6:
                    c = fg
            if min(dist_seg(X, Y, 46, 64, 58, 76), dist_seg(X, Y, 58, 76, 82, 50)) <= 4.5:
                c = ok
            put(x, y, c)
    return png(n, n, px)

out = os.path.dirname(os.path.abspath(__file__))
for name, n in (("32x32.png", 32), ("128x128.png", 128), ("icon.png", 256)):
    open(os.path.join(out, name), "wb").write(render(n))
