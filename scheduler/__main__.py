"""`python -m scheduler` runs the `oyez` command."""

import sys

from .entry import main

sys.exit(main())
