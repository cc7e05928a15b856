"""Lead attribution consumer: decode -> validate -> attribute -> state -> publish -> commit."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def compiled_modules() -> list[str]:
    """The modules running as mypyc-compiled C extensions (setup.py), e.g. ``consumer.rules.attribute``."""
    return sorted(
        ".".join((*so.relative_to(_PACKAGE.parent).parent.parts, so.name.split(".", 1)[0]))
        for so in _PACKAGE.rglob("*.so")
    )


def _refuse_stale_extensions() -> None:
    """In a source checkout (`pip install -e`), the compiled extensions sit next to their sources
    and Python imports them first: an edited .py would be silently ignored, and the tests would
    pass or fail on the old code. Refuse instead, naming the fix. Installed packages are skipped:
    there nobody edits the sources, and unpacking sets the files' times in no particular order."""
    if not (_PACKAGE.parent / "setup.py").is_file():
        return
    for so in _PACKAGE.rglob("*.so"):
        source = so.with_name(so.name.split(".", 1)[0] + ".py")
        if source.is_file() and source.stat().st_mtime > so.stat().st_mtime:
            raise ImportError(
                f"{source.relative_to(_PACKAGE.parent)} changed after it was compiled: "
                "run `make compile` to rebuild the extensions, or `make pure` to run without them"
            )


_refuse_stale_extensions()
