"""Fast, time-ordered UUIDs for nodes (UUID version 7).

Node UUIDs need uniqueness, not secrecy.  ``uuid.uuid4()`` costs ~15 us here (an entropy read and a
UUID object per call) and, being random, makes every insert dirty a random page of the uuid index;
a time-ordered UUID appends to the index instead, so a transaction writes fewer pages.  The 74
random bits come from ``random.getrandbits`` (re-seeded by Python after ``fork``).
"""

from __future__ import annotations

import random
import time

__all__ = ["new_uuid"]

_getrandbits = random.getrandbits
_time_ns = time.time_ns


def new_uuid() -> str:
    """A UUID version 7 (48-bit millisecond timestamp, then random bits) in canonical form."""
    millis = _time_ns() // 1_000_000
    rand = _getrandbits(74)
    value = (
        (millis & 0xFFFFFFFFFFFF) << 80
        | 0x7 << 76  # version 7
        | (rand >> 62) << 64  # 12 random bits
        | 0b10 << 62  # RFC 9562 variant
        | (rand & 0x3FFFFFFFFFFFFFFF)  # 62 random bits
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
