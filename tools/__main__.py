"""``python -m tools``: the same command line as ``orion`` (see ``tools.cli``)."""

import sys

from tools.cli import main

sys.exit(main())
