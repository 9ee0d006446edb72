"""``python -m tools.replay``: see ``tools.replay``."""

import sys

from tools.replay import main

sys.exit(main())
