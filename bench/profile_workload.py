"""A short, fixed ITHP workload for ncu / nsys / torch.profiler: ``ithp-fast profile`` as a script.

    python bench/profile_workload.py --workload train --steps 5      # see --help for the Nsight lines

(Not named ``profile.py``: in this folder that name would shadow the standard library's
``profile`` module, which torch imports, for every script run from here.)
"""

import sys

from ithp_fast.tools.profile import main

if __name__ == "__main__":
    sys.exit(main())
