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
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.faults",
            "--faults",
            "kill-children",
            "--rate",
            "3",
            "--before",
            "4",
            "--duration",
            "0",
            "--after",
            "4",
            "--quiet-timeout",
            "120",
            "--out",
            "faults-ci",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (result,) = json.loads(RESULT.read_text())["results"]
    assert result["orders"] >= 15
    assert (result["lost"], result["duplicated"], result["wrong"], result["audit"]) == (0, 0, 0, 0)

    # The checker, fed one of the run's orders whose email is now delivered twice
    # (a second message, with a Message-ID of its own) and whose authorization now
    # has a second approved capture at the provider, another order whose email
    # arrives again with the same Message-ID (a resend, not a duplicate), and one
    # order that never existed, counts each as what it is.
    import email

    from bench.faults import check
    from bench.harness import services_env

    log_dir = Path(result["log_dir"])
    mail = log_dir / "mail"
    first, second = sorted(mail.glob("*.eml"))[:2]
    order_id = email.message_from_bytes(first.read_bytes())["X-Orion-Order"]
    resent_id = email.message_from_bytes(second.read_bytes())["X-Orion-Order"]
    assert order_id != resent_id
    duplicate = email.message_from_bytes(first.read_bytes())
    duplicate.replace_header("Message-ID", f"<{uuid.uuid4().hex}@checker.test>")
    (mail / "duplicate.eml").write_bytes(duplicate.as_bytes())
    shutil.copy(second, mail / "resent.eml")
    env = services_env(log_dir)
    _capture_again(env["DATABASE_URL"], order_id)
    now = time.time()
    again = check(env, mail, [(order_id, now), (resent_id, now), (str(uuid.uuid4()), now)], now)
    assert (again["lost"], again["duplicated"], again["wrong"], again["resent"]) == (1, 2, 0, 1)


def _capture_again(database_url: str, order_id: str) -> None:
    """A second approved capture of the order's authorization, under another key, as
    a provider that charged twice would have recorded it."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("""
                INSERT INTO sandbox_operations (idempotency_key, operation, target, token, amount,
                                                result, reference, created_at)
                SELECT 'checker-test-' || c.idempotency_key, c.operation, c.target, c.token,
                       c.amount, c.result, 'ca_checker_test', now()
                FROM sandbox_operations c JOIN sandbox_operations a ON c.target = a.reference
                WHERE a.operation = 'authorize' AND a.target = :order AND c.operation = 'capture'
                """),
                {"order": order_id},
            )
    finally:
        engine.dispose()
