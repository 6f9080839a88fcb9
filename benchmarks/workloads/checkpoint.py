"""The checkpoint codec: encode + decode of a WorkChain-sized state, and its size in bytes.

The state is ``miniengine.core.codec.benchmark_state()``.  Decoding is timed without a
``resolve_pk`` (stored Data comes back as references), so only the codec is measured, not the
database; AiiDA's figure (peers/aiida) is YAML serialise + deserialise of a W3 checkpoint.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.registry import Measurement, Metric, Params, Skipped, Target, Workload, check

BATCHES = 5


def _load_codec() -> Any:
    try:
        from miniengine.core import codec
    except ImportError as exc:
        raise Skipped(f"codec not available ({exc})") from None
    missing = [name for name in ("encode", "decode", "benchmark_state") if not hasattr(codec, name)]
    if missing:
        raise Skipped(f"codec not available (miniengine.core.codec lacks {', '.join(missing)})")
    return codec


def _per_call_us(call: Callable[[], object], reps: int) -> float:
    """Median over a few batches of the mean time per call, in microseconds."""
    per_batch = max(1, reps // BATCHES)
    clock = time.perf_counter
    results = []
    for _ in range(BATCHES):
        start = clock()
        for _ in range(per_batch):
            call()
        results.append((clock() - start) / per_batch)
    return 1e6 * statistics.median(results)


def _stored_data_by_pk(value: Any, found: dict[int, Any]) -> dict[int, Any]:
    from miniengine import Data

    if isinstance(value, Data):
        if value.pk is not None:
            found[value.pk] = value
    elif isinstance(value, dict):
        for item in value.values():
            _stored_data_by_pk(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _stored_data_by_pk(item, found)
    return found


def measure(params: Params) -> Measurement:
    codec = _load_codec()
    state = codec.benchmark_state()
    blob = codec.encode(state)
    check(isinstance(blob, bytes), f"encode returned {type(blob).__name__}")
    # Correctness: resolving the stored nodes gives the state back, and a decoded state (with
    # references) encodes to the same bytes.
    by_pk = _stored_data_by_pk(state, {})
    check(codec.decode(blob, resolve_pk=by_pk.__getitem__) == state, "round trip changed the state")
    check(codec.encode(codec.decode(blob)) == blob, "re-encoding a decoded state changed it")

    reps = params["reps"]
    encode_us = _per_call_us(lambda: codec.encode(state), reps)
    decode_us = _per_call_us(lambda: codec.decode(blob), reps)
    return Measurement(
        metrics={"codec_us": encode_us + decode_us, "codec_bytes": float(len(blob))},
        details={
            "encode_us": encode_us,
            "decode_us": decode_us,
            "reps": reps,
            "stored_nodes_in_state": len(by_pk),
            "state_keys": sorted(state) if isinstance(state, dict) else None,
        },
    )


WORKLOAD = Workload(
    id="checkpoint",
    title="codec encode + decode of a WorkChain state",
    metrics=(
        Metric(
            "codec_us",
            "checkpoint encode + decode",
            "µs",
            Target("<=", 50),
            aiida="16 ms (YAML)",
            digits=1,
        ),
        Metric(
            "codec_bytes",
            "checkpoint size",
            "B",
            Target("<=", 200),
            aiida="1,331 B (YAML)",
        ),
    ),
    measure=measure,
    params={"reps": 50_000},
    quick_params={"reps": 10_000},
)
