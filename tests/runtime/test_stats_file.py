"""The runtime stats file: layout per docs/runtime-stats-file.md, seqlock, lifecycle."""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otelbot.runtime import stats_file
from otelbot.runtime.stats_file import StatsFile
from otelbot.testing.stats_file import read_stats

# Written from the contract, not imported from the writer: a layout change must fail here.
CONTRACT = struct.Struct("<4sHHIIQddd" + "QQQdd" * 3 + "ddQqQ")


@pytest.fixture
def stats(tmp_path: Path) -> Iterator[StatsFile]:
    f = StatsFile.create(str(tmp_path), interval=1.0)
    yield f
    f.close()


def _write(stats: StatsFile, heartbeat: float = 0.0, **overrides: object) -> None:
    values: dict[str, object] = {
        "collections": [5, 2, 1],
        "collected": [100, 20, 3],
        "uncollectable": [0, 0, 4],
        "pause_total": [0.01, 0.02, 0.03],
        "pause_max": [0.001, 0.01, 0.02],
        "loop_lag": 0.25,
        "loop_lag_max": 0.5,
        "tasks": 7,
    }
    values.update(overrides)
    stats.write(heartbeat or time.time(), **values)  # type: ignore[arg-type]


def test_file_has_the_documented_layout(stats: StatsFile, tmp_path: Path) -> None:
    path = tmp_path / f"{os.getpid()}.stats"
    assert stats.path == str(path)
    data = path.read_bytes()
    assert len(data) == 4096
    _write(stats, heartbeat=1700000000.5)
    data = path.read_bytes()
    fields = CONTRACT.unpack_from(data, 0)
    assert fields[:5] == (b"OTBS", 1, 0, os.getpid(), 0)
    assert fields[5] == 2  # one write: seq bumped twice
    assert abs(fields[6] - time.time()) < 5  # start time
    assert fields[7] == 1700000000.5  # heartbeat
    assert fields[8] == 1.0  # interval
    assert fields[9:14] == (5, 100, 0, 0.01, 0.001)  # generation 0
    assert fields[14:19] == (2, 20, 0, 0.02, 0.01)
    assert fields[19:24] == (1, 3, 4, 0.03, 0.02)
    assert fields[24:] == (0.25, 0.5, 7, 0, 0)
    assert data[208:] == bytes(4096 - 208)
    # Spot-check offsets named in the contract.
    assert struct.unpack_from("<d", data, 32)[0] == 1700000000.5
    assert struct.unpack_from("<Q", data, 48 + 40 * 2 + 16)[0] == 4  # gen 2 uncollectable
    assert struct.unpack_from("<Q", data, 184)[0] == 7


def test_read_stats_returns_named_fields(stats: StatsFile) -> None:
    _write(stats, heartbeat=123.0)
    snapshot = read_stats(stats.path)
    assert snapshot["pid"] == os.getpid()
    assert snapshot["heartbeat"] == 123.0
    assert snapshot["gc"][2] == {
        "collections": 1,
        "collected": 3,
        "uncollectable": 4,
        "pause_total": 0.03,
        "pause_max": 0.02,
    }
    assert snapshot["loop_lag_max"] == 0.5
    assert snapshot["seq"] % 2 == 0


def test_update_counters_reach_the_file(stats: StatsFile) -> None:
    for _ in range(3):
        stats_file.update_started()
    stats_file.update_ended()
    _write(stats)
    snapshot = read_stats(stats.path)
    assert snapshot["updates_in_flight"] == 2
    assert snapshot["updates_total"] == 1


def test_update_counters_are_noops_without_a_file(tmp_path: Path) -> None:
    stats_file.update_started()
    stats_file.update_ended()
    stats = StatsFile.create(str(tmp_path))
    try:
        _write(stats)
        snapshot = read_stats(stats.path)
        assert (snapshot["updates_in_flight"], snapshot["updates_total"]) == (0, 0)
    finally:
        stats.close()
    stats_file.update_started()  # after close: ignored again, no error
    stats_file.update_ended()


def test_reader_waits_out_a_write_in_progress(stats: StatsFile) -> None:
    _write(stats)
    with open(stats.path, "r+b") as f, mmap.mmap(f.fileno(), 4096) as m:
        struct.pack_into("<Q", m, 16, 3)  # odd: a writer is in the middle of a write
        with pytest.raises(ValueError, match="no stable snapshot"):
            read_stats(stats.path, attempts=5)
        struct.pack_into("<Q", m, 16, 4)
    assert read_stats(stats.path)["seq"] == 4


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "error"),
    [(0, "<4s", b"NOPE", "bad magic"), (4, "<H", 2, "layout version 2")],
)
def test_reader_rejects_other_files(
    stats: StatsFile, offset: int, fmt: str, value: object, error: str
) -> None:
    with open(stats.path, "r+b") as f, mmap.mmap(f.fileno(), 4096) as m:
        struct.pack_into(fmt, m, offset, value)
    with pytest.raises(ValueError, match=error):
        read_stats(stats.path)


def test_close_removes_the_file_and_later_writes_are_ignored(tmp_path: Path) -> None:
    stats = StatsFile.create(str(tmp_path))
    assert os.path.exists(stats.path)
    stats.close()
    assert not os.path.exists(stats.path)
    assert list(tmp_path.iterdir()) == []  # no temporary file either
    _write(stats)  # no error, no file
    stats.close()
    assert list(tmp_path.iterdir()) == []


def test_stale_file_of_the_same_pid_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / f"{os.getpid()}.stats"
    path.write_bytes(b"garbage from an earlier container run")
    stats = StatsFile.create(str(tmp_path))
    try:
        assert read_stats(str(path))["magic"] == b"OTBS"
    finally:
        stats.close()


def test_one_file_per_process(stats: StatsFile, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        StatsFile.create(str(tmp_path / "other"))


def test_missing_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        StatsFile.create(str(tmp_path / "missing"))
    stats = StatsFile.create(str(tmp_path))  # nothing half-open was left behind
    stats.close()


def test_forked_child_leaves_the_parent_file_alone(stats: StatsFile) -> None:
    _write(stats, heartbeat=10.0)
    pid = os.fork()
    if pid == 0:  # child: try to write and to remove the parent's file
        try:
            _write(stats, heartbeat=99.0)
            stats.close()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.exists(stats.path)
    assert read_stats(stats.path)["heartbeat"] == 10.0
