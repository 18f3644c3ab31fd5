"""``python -m ithp_fast`` (and ``torchrun -m ithp_fast``): the ``ithp-fast`` command line."""

import sys

from .tools.cli import main

sys.exit(main())
