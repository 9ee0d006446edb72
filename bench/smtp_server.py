"""The fault suite's own SMTP server: ``tools.smtp_sink`` (every message kept as an
.eml file), plus refusals on demand for the ``smtp-refuse`` fault.

``python -m bench.smtp_server --port N --dir DIR --refuse-file FILE``: while FILE
exists, each recipient address listed in it (one per line) is refused at RCPT with
``550 5.1.1``, the permanent refusal a real relay gives for an unknown mailbox.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.smtp_sink import MaildirHandler, serve


class RefusingHandler(MaildirHandler):
    def __init__(self, folder: Path, refuse_file: Path) -> None:
        super().__init__(folder)
        self.refuse_file = refuse_file

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        try:
            refused = set(self.refuse_file.read_text().split())
        except FileNotFoundError:
            refused = set()
        if address in refused:
            return "550 5.1.1 mailbox unavailable (the fault suite refuses it)"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--refuse-file", type=Path, required=True)
    args = parser.parse_args()
    serve(
        RefusingHandler(args.dir, args.refuse_file),
        "127.0.0.1",
        args.port,
        f"SMTP server on 127.0.0.1:{args.port}, writing to {args.dir}",
    )


if __name__ == "__main__":
    main()
