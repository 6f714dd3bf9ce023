"""Progress of long loops when stderr is not a terminal, as under pytest's capture."""

from __future__ import annotations

import logging

import pytest

from nas.progress import MIN_LOGGED_TOTAL, progress


def test_long_loop_logs_each_quarter(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nas.progress"):
        items = list(progress(range(40), desc="latency"))
    assert items == list(range(40))
    assert [r.getMessage() for r in caplog.records] == ["latency: 10/40", "latency: 20/40", "latency: 30/40",
                                                        "latency: 40/40"]


def test_generator_uses_given_total(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nas.progress"):
        assert sum(progress((i for i in range(24)), desc="subnets", total=24)) == sum(range(24))
    assert caplog.records[-1].getMessage() == "subnets: 24/24"


def test_short_or_disabled_loop_stays_quiet(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nas.progress"):
        assert list(progress(range(MIN_LOGGED_TOTAL - 1), desc="epochs")) == list(range(MIN_LOGGED_TOTAL - 1))
        assert list(progress(range(100), desc="off", enabled=False)) == list(range(100))
        assert list(progress((i for i in range(100)), desc="unknown length")) == list(range(100))
    assert caplog.records == []
