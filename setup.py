"""Compiles the per-event path to C with mypyc; everything else about the package is in pyproject.toml.

These modules run for every event (decode -> validate -> attribute -> state codec -> output
encoding, and the batch loop around them). They are plain, fully typed Python (`mypy --strict`);
mypyc turns them into C extensions that run the same code about 1.8x faster
(docs/performance.md: 54 vs 98 us of consumer CPU per event, both with the GC tuned).
The run loop, Kafka and Redis I/O, configuration and the sweeper stay interpreted: they run per
batch, not per event, and tests subclass or patch some of them.

`pip install .` builds the extensions (gcc and the Python headers are needed); `pip install -e .`
builds them next to their sources, where Python imports them before the .py files, so
`consumer/__init__.py` refuses to start on an extension older than its source (`make compile`
rebuilds, `make pure` removes them). LEADS_PURE_PYTHON=1 builds no extension at all.
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED = [
    "consumer/avro/varint.py",
    "consumer/avro/lead_reader.py",
    "consumer/avro/bounds.py",
    "consumer/model.py",
    "consumer/rules/validate.py",
    "consumer/rules/attribute.py",
    "consumer/state/customer.py",
    "consumer/state/keys.py",
    "consumer/state/codec.py",
    "consumer/state/transition.py",
    "consumer/state/command.py",
    "consumer/processing/tally.py",
    "consumer/avro/attributed_writer.py",
    "consumer/avro/outputs.py",
    "consumer/processing/records.py",
    "consumer/processing/batch.py",
]


def extensions() -> list[object]:
    if os.environ.get("LEADS_PURE_PYTHON") == "1":
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 - only needed when compiling

    return list(mypycify(COMPILED, opt_level="3"))


if __name__ == "__main__":  # setuptools runs this file as __main__; tests read COMPILED
    setup(ext_modules=extensions())
