"""Suite-wide guard: in CI a skipped test, or a run without integration tests, is a failure."""

from __future__ import annotations

import os

import pytest

_ran: dict[str, int] = {"integration": 0, "skipped": 0}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path) or "/chaos/" in str(item.path):
            item.add_marker(pytest.mark.integration)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _ran["skipped"] += 1
    elif report.when == "call" and "integration" in report.keywords:
        _ran["integration"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") != "true" or exitstatus != 0:
        return
    if _ran["skipped"]:
        print(f"\nCI: {_ran['skipped']} tests were skipped; every test must run in CI")
        session.exitstatus = 1
    elif session.testscollected and not _ran["integration"] and not session.config.option.keyword:
        print("\nCI: no integration test ran against Kafka and Redis")
        session.exitstatus = 1
