"""``/metrics`` in docker-compose merges one multiprocess folder per container
(METRICS_ROOT); real processes write them, as containers would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRITE = (
    "from observability.metrics import TASK_RETRIES; TASK_RETRIES.labels('saga.authorize_payment').inc({n})"
)
SCRAPE = (
    "from observability.metrics import _MergedFiles; import os; "
    "print([s.value for m in _MergedFiles(os.path.join(os.environ['METRICS_ROOT'], '*', '*.db')).collect() "
    "for s in m.samples if s.name == 'orion_task_retries_total'])"
)


def run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "METRICS_ROOT")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_samples_of_every_container_folder_are_summed(tmp_path):
    for container, n in (("web-1", 2), ("worker-1", 3), ("worker-2", 5)):
        (tmp_path / container).mkdir()
        run(WRITE.format(n=n), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / container))
    assert run(SCRAPE, METRICS_ROOT=str(tmp_path)).strip() == "[10.0]"


def test_a_file_a_process_is_creating_right_now_does_not_fail_the_scrape(tmp_path):
    """prometheus-client creates a process's file empty, then writes its header: a
    scrape in between read 0 bytes and answered 500 (struct.error)."""
    from prometheus_client import multiprocess

    from observability.metrics import _MergedFiles

    (tmp_path / "counter_4242.db").write_bytes(b"")
    with pytest.raises(Exception, match="unpack"):  # what prometheus-client itself does
        multiprocess.MultiProcessCollector.merge([str(tmp_path / "counter_4242.db")], accumulate=True)
    assert list(_MergedFiles(str(tmp_path / "*.db")).collect()) == []
