"""`python -m clausewatch`: the `clausewatch` command (its child processes start this way)."""

import sys

from clausewatch.cli import main

sys.exit(main())
