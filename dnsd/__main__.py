"""``python -m dnsd``: the same as the ``dnsd`` command."""

import sys

from dnsd.cli import main

sys.exit(main())
