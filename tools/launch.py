"""Start the whole platform: SMTP sink, web, outbox relay, worker, beat and Flower, in the
foreground, until Ctrl-C; a process that crashes is restarted with backoff (``supervise``).

``orion up [--no-flower] [--no-smtp-sink] [--no-beat] [--no-catalog]`` (``./run.sh``
calls it; also ``python -m tools.launch``). The mode comes from ``ORION_MODE``: ``embedded`` by
default, needing no servers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import click

from config import ConfigError, flower_basic_auth, get_settings, prepare_data_dir
from config.settings import REPO_ROOT, Settings


def clear_stale_bindings(settings: Settings) -> None:
    """kombu's filesystem transport leaves one binding file per exited process
    under ``control_folder``; fanout messages would be written for each forever.
    The Socket.IO relay's queues go too: its listeners are gone, and a client
    replays what it missed from the order event log."""
    relay = settings.socketio_transport_options
    for folder in (
        settings.broker_transport_options.get("control_folder"),
        relay.get("control_folder"),
        relay.get("data_folder_in"),
    ):
        if folder and Path(folder).exists():
            shutil.rmtree(folder)
            Path(folder).mkdir(parents=True)


def commands(settings: Settings, args: SimpleNamespace) -> dict[str, list[str]]:
    py, celery = sys.executable, [sys.executable, "-m", "celery", "-A", "worker"]
    queues = "orion.saga,orion.fulfilment,orion.notify"
    procs = {
        "worker": [
            *celery,
            "worker",
            "-l",
            "info",
            "-c",
            str(settings.worker_concurrency),
            "-Q",
            queues,
            "-n",
            "orion@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        "web": web_command(settings),
        "relay": [py, "-m", "worker.relay"],
    }
    if not args.no_smtp_sink:
        procs["smtp"] = [py, "-m", "tools.smtp_sink"]
    if not args.no_beat:
        procs["beat"] = [*celery, "beat", "-l", "info", "-s", str(settings.data_dir / "celerybeat-schedule")]
    if not args.no_flower:
        # Address, port, auth and persistence come from flowerconfig.py.
        procs["flower"] = [
            *celery,
            "flower",
            f"--conf={REPO_ROOT / 'flowerconfig.py'}",
            f"--enable_events={not settings.embedded}",
        ]
    return procs


def metrics_dir(settings: Settings) -> Path:
    """``PROMETHEUS_MULTIPROC_DIR`` for every process started here (default
    ``<data dir>/metrics``), emptied first: prometheus-client's multiprocess files
    of processes gone would otherwise add their old counts to today's."""
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.data_dir / "metrics")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def web_command(settings: Settings) -> list[str]:
    """gunicorn with threads: Flask-SocketIO's ``threading`` mode serves WebSocket
    through simple-websocket, one thread per open connection, so ``WEB_THREADS``
    bounds the connected clients. One process: Socket.IO's long-polling needs
    sticky sessions, which several processes behind one port would not have."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "-w",
        "1",
        "--threads",
        str(settings.web_threads),
        "--worker-connections",
        str(settings.web_threads + 100),
        "-b",
        f"{settings.web_host}:{settings.web_port}",
        "--access-logfile",
        "-",
        "web:create_app()",
    ]


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM ``proc``'s process group (started with ``start_new_session``), then
    SIGKILL it if it has not exited after ``timeout`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_healthy(proc: subprocess.Popen, base_url: str, log: Path, timeout: float = 60) -> None:
    """Wait until the web process ``proc`` answers ``GET /healthz`` with 200.

    Raises RuntimeError if it exits first, TimeoutError after ``timeout`` seconds;
    both name ``log``.
    """
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"web exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"web not up after {timeout:g} s; see {log}")
        time.sleep(0.2)


def prepare(settings: Settings, args: SimpleNamespace) -> None:
    from tools.dbsetup import ensure_database, prepare_sandbox, upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    prepare_data_dir(settings)
    if not args.no_flower:
        flower_basic_auth(settings)  # refuse here, before anything starts, when it is missing
    clear_stale_bindings(settings)
    ensure_database(settings.database_url)
    upgrade(settings.database_url)
    prepare_sandbox(settings.database_url, settings.sandbox_database_url)
    if not args.no_catalog and _catalog_empty():
        subprocess.run([sys.executable, "-m", "tools.catalog"], cwd=REPO_ROOT, check=True)


def _catalog_empty() -> bool:
    from sqlalchemy import func, select

    from models import Product, unit_of_work

    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Product)) == 0


def banner(settings: Settings, names: list[str]) -> str:
    base = f"http://{settings.web_host}:{settings.web_port}"
    lines = [
        f"Orion is up ({settings.mode} mode): {', '.join(names)}",
        f"  shop       {base}/            operators: {base}/operator (python -m tools create-operator)",
        f"  API        {base}/api/v1   (OpenAPI: {base}/api/v1/openapi.json)",
        f"  health     {base}/healthz  {base}/readyz",
    ]
    if "flower" in names:
        where = (
            "FLOWER_BASIC_AUTH"
            if os.environ.get("FLOWER_BASIC_AUTH")
            else settings.data_dir / "flower-basic-auth"
        )
        lines.append(f"  Flower     {settings.flower_url}   (basic auth user:password in {where})")
    if "smtp" in names:
        lines.append(f"  emails     {settings.data_dir / 'mail'} (SMTP sink on port {settings.smtp_port})")
    lines.append(f"  data       {settings.data_dir}")
    lines.append("  replay     ./run.sh replay --limit 2000 --concurrency 8   (in another terminal)")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


RESTART_BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # a process up this long has its backoff reset
STARTUP_S = 10.0  # a process that exits this soon after the launch did not start at all


def supervise(procs: dict[str, list[str]], settings: Settings) -> int:
    """Run ``procs`` until SIGINT or SIGTERM, then stop them all (SIGTERM, 20 s, SIGKILL).

    A process that exits on its own is started again after a backoff (1 s, 2 s,
    4 s ... capped at ``RESTART_BACKOFF_MAX_S``; back to 1 s once it has run
    ``STABLE_AFTER_S``), as supervisord or a container's restart policy would,
    and the others keep running: a crashed worker must not take the API and the
    dashboards down with it. A process that exits with an error code within
    ``STARTUP_S`` of the launch did not start (a port in use, a bad setting):
    everything stops and the launcher returns 1, so the user sees it at once (one
    killed by a signal is restarted). Otherwise returns 0.
    """
    running = {name: subprocess.Popen(cmd, cwd=REPO_ROOT) for name, cmd in procs.items()}
    launched = time.monotonic()
    started = {name: launched for name in running}
    backoff = {name: 1.0 for name in running}
    restart_at: dict[str, float] = {}
    print(banner(settings, list(running)), flush=True)
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    code = 0
    while not stop["now"]:
        now = time.monotonic()
        for name, proc in running.items():
            if name in restart_at or proc.poll() is None:
                continue
            if started[name] == launched and now - launched < STARTUP_S and proc.returncode > 0:
                print(
                    f"launcher: {name} exited with {proc.returncode} at start-up; stopping the rest",
                    flush=True,
                )
                code, stop["now"] = 1, True
                break
            if now - started[name] >= STABLE_AFTER_S:
                backoff[name] = 1.0
            restart_at[name] = now + backoff[name]
            print(
                f"launcher: {name} exited with {proc.returncode}; restarting it in {backoff[name]:.0f} s",
                flush=True,
            )
            backoff[name] = min(backoff[name] * 2, RESTART_BACKOFF_MAX_S)
        for name, due in list(restart_at.items()):
            if now >= due:
                del restart_at[name]
                running[name], started[name] = subprocess.Popen(procs[name], cwd=REPO_ROOT), now
                print(f"launcher: {name} restarted (pid {running[name].pid})", flush=True)
        time.sleep(0.5)
    for proc in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in running.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return code


@click.command("up")
@click.option("--no-flower", is_flag=True, help="do not start Flower")
@click.option("--no-smtp-sink", is_flag=True, help="do not start the SMTP sink (a real relay is set)")
@click.option("--no-beat", is_flag=True, help="do not start Celery beat (another host runs it)")
@click.option("--no-catalog", is_flag=True, help="do not import the catalog into an empty database")
def command(**flags: bool) -> int:
    """Start the whole platform in the foreground until Ctrl-C: SMTP sink, web, outbox
    relay, worker, beat and Flower. A crashed process is restarted with backoff."""
    args = SimpleNamespace(**flags)
    os.chdir(REPO_ROOT)
    # Files the platform creates (SQLite databases, broker and relay folders,
    # mail, the Flower password) are readable by their owner only: they hold
    # password hashes, tokens' revocations and customers' emails.
    os.umask(0o077)
    try:
        metrics_dir(get_settings())
        settings = get_settings()
        prepare(settings, args)
    except ConfigError as exc:
        print(f"launch: {exc}", file=sys.stderr)
        return 2
    return supervise(commands(settings, args), settings)


def main(argv: list[str] | None = None) -> int:
    from tools.clicommon import run

    return run(command, argv, "orion up")


if __name__ == "__main__":
    sys.exit(main())
