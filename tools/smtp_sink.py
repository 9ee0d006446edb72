"""A local SMTP server (aiosmtpd) that stores what it receives as .eml files.

``python -m tools.smtp_sink [--host 127.0.0.1] [--port 8025] [--dir var/mail]``;
the embedded launcher starts it, so emails are really sent over SMTP.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from aiosmtpd.controller import Controller


class MaildirHandler:
    """Writes each message to ``folder`` as ``<n>.eml``."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}.eml"
        (self.folder / name).write_bytes(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def main(argv: list[str] | None = None) -> None:
    from config import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.smtp_host)
    parser.add_argument("--port", type=int, default=settings.smtp_port)
    parser.add_argument("--dir", type=Path, default=settings.data_dir / "mail")
    args = parser.parse_args(argv)
    serve(
        MaildirHandler(args.dir),
        args.host,
        args.port,
        f"SMTP sink on {args.host}:{args.port}, writing to {args.dir}",
    )


def serve(handler: object, host: str, port: int, banner: str) -> None:
    """Run an aiosmtpd server with ``handler`` on ``host:port`` until Ctrl-C (or
    SIGTERM's KeyboardInterrupt), printing ``banner`` once it listens."""
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    print(banner, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


if __name__ == "__main__":
    main()
