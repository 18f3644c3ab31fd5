"""A short, fixed ITHP workload for ncu / nsys / torch.profiler: ``ithp-fast profile`` as a script.

    python bench/profile.py --workload train --steps 5      # see --help for the Nsight lines
"""

import os
import sys

# Run as a script, this folder is sys.path[0], where this file would shadow the standard
# library's ``profile`` module (which cProfile, imported by torch, needs): drop it first.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from ithp_fast.tools.profile import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
