"""`python -m app`: the same as the `imagebash` command."""

import sys

from app.cli import main

sys.exit(main())
