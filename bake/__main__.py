"""`python -m bake` is the `bake` command."""

import sys

from bake.cli import main

sys.exit(main())
