"""``python -m tfserve_magic.manager supervise PARENT_PID -- ARGV...`` (see supervise.py)."""

import sys

from tfserve_magic.manager.supervise import main

raise SystemExit(main(sys.argv[1:]))
