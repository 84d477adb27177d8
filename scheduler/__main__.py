"""`python -m scheduler` runs the `oyez` command."""

import sys

from .cli import main

sys.exit(main())
