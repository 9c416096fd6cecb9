"""A shard's progress reports on their thread (featurepull.tasks.reports): which are sent,
in which order, and how a report that fails reaches the shard."""

from __future__ import annotations

import threading

import pytest

from featurepull.tasks.reports import Reports


def test_the_first_and_last_reports_are_sent_and_a_newer_one_replaces_one_unsent() -> None:
    sent: list[int] = []
    gate = threading.Event()

    def send(item: int) -> None:
        gate.wait()  # the thread holds the first report until every other one is posted
        sent.append(item)

    with Reports(send, "featurepull-progress-test") as reports:
        for item in (1, 2, 3, 4):
            reports.post(item)
        gate.set()
    assert sent == [1, 4]
    assert not any(t.name == "featurepull-progress-test" for t in threading.enumerate())


def test_a_report_that_raises_is_raised_by_check_and_by_finish() -> None:
    def send(item: int) -> None:
        raise ConnectionError(f"report {item}")

    reports = Reports(send, "featurepull-progress-test")
    with pytest.raises(ConnectionError, match="report 1"), reports:
        reports.post(1)
        reports.post(2)  # not sent: the thread ended at the first failure
    with pytest.raises(ConnectionError, match="report 1"):
        reports.check()  # what the read's next answer would see
