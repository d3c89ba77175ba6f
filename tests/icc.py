"""A Display P3 ICC profile for tests (littleCMS, through Pillow, builds only sRGB, Lab and XYZ).

ICC v2 matrix/TRC display profile: the Display P3 primaries adapted to D50 (as in Apple's
profile), the sRGB tone curve as a 1024-entry table; just the tags a colour-managed reader needs.
"""
import struct

D50 = (0.9642, 1.0, 0.8249)
P3_PRIMARIES_D50 = ((0.51512, 0.24120, -0.00105), (0.29198, 0.69225, 0.04189), (0.15710, 0.06657, 0.78407))


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def _srgb_curve(n: int = 1024) -> bytes:
    def decode(v: float) -> float:
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    values = [round(decode(i / (n - 1)) * 65535) for i in range(n)]
    return b"curv" + bytes(4) + struct.pack(">I", n) + struct.pack(f">{n}H", *values)


def _description(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    return (b"desc" + bytes(4) + struct.pack(">I", len(ascii_)) + ascii_
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + bytes(67))


def display_p3(description: str = "Display P3 (test)") -> bytes:
    """The bytes of the profile."""
    curve = _srgb_curve()
    tags = [(b"desc", _description(description)), (b"wtpt", _xyz(*D50)),
            (b"rXYZ", _xyz(*P3_PRIMARIES_D50[0])), (b"gXYZ", _xyz(*P3_PRIMARIES_D50[1])),
            (b"bXYZ", _xyz(*P3_PRIMARIES_D50[2])), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text" + bytes(4) + b"No copyright, test data\0")]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)  # tags start on 4-byte boundaries
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntr" + b"RGB " + b"XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"APPL" + bytes(4) + bytes(4) + bytes(4)
              + bytes(8) + struct.pack(">I", 0) + _s15(D50[0]) + _s15(D50[1]) + _s15(D50[2]) + b"lcms" + bytes(44))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body
