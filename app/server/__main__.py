"""`python -m app.server ...`: the same as `imagebash serve ...` (see app.server.cli)."""

import sys

from app.server.cli import main

sys.exit(main())
