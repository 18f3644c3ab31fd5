"""``ithp-fast train`` / ``evaluate`` (placeholder until the training module lands)."""


def register(sub) -> None:
    for name in ("train", "evaluate"):
        p = sub.add_parser(name)
        p.set_defaults(func=lambda args: print("not available yet") or 1)
