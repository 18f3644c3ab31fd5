"""Tools on top of the library: the ``ithp-fast`` command line (``cli.py``), benchmark runs and
their rendering (``benchmarks.py``), the profiling workload (``profile.py``) and the serving
measurements (``measure_serving.py``)."""
