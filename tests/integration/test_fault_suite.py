"""The fault-injection suite's short form (``python -m bench.faults``), and its
checker's sensitivity: it must count a lost order and a duplicate email when
there is one. The suite runs its own platform on its own vhost, database and
Redis database; no test worker may run beside it (its own module)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.support.processes import REPO

RESULT = REPO / "bench" / "results" / "faults-ci.json"


def test_kill_9_of_the_worker_s_pool_loses_and_duplicates_nothing():
    RESULT.unlink(missing_ok=True)
    run = subprocess.run([sys.executable, "-m", "bench.faults", "--faults", "kill-children",
                          "--rate", "3", "--before", "4", "--duration", "0", "--after", "4",
                          "--quiet-timeout", "120", "--out", "faults-ci"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (result,) = json.loads(RESULT.read_text())["results"]
    assert result["orders"] >= 15
    assert (result["lost"], result["duplicated"], result["wrong"], result["audit"]) == (0, 0, 0, 0)

    # The checker, fed one of the run's orders whose email is now delivered twice
    # and one order that never existed, counts both.
    import email

    from bench.faults import check
    from bench.harness import services_env

    log_dir = Path(result["log_dir"])
    mail = log_dir / "mail"
    sample = sorted(mail.glob("*.eml"))[0]
    order_id = email.message_from_bytes(sample.read_bytes())["X-Orion-Order"]
    shutil.copy(sample, mail / "duplicate.eml")
    now = time.time()
    again = check(services_env(log_dir), mail, [(order_id, now), (str(uuid.uuid4()), now)], now)
    assert (again["lost"], again["duplicated"], again["wrong"]) == (1, 1, 0)
