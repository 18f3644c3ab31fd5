"""``ithp-fast bench`` (placeholder until the benchmark runner lands)."""


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the benchmark suite")
    p.set_defaults(func=lambda args: print("ithp-fast bench: not available yet") or 1)
