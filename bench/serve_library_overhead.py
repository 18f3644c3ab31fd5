"""What a server library costs per request: ``ithp-fast serve``'s application (FastAPI + uvicorn and its batcher)
against LitServe's dynamic batching, both around the same stand-in model that costs nothing
(``bench/servers/stand_in_servers.py``), with the clients and rounds of ``bench/serve_load.py``.

    python bench/serve_library_overhead.py     # -> bench/results/serve-library-overhead-<date>.json
"""

import datetime
import json
import sys
from pathlib import Path

from serve_load import ROOT, Server, free_port, interleaved, machine, synthetic_texts


def stand_in(library: str) -> Server:
    port = free_port()
    return Server(library, [sys.executable, str(ROOT / "bench" / "servers" / "stand_in_servers.py"), library,
                            str(port)], {}, port)


def main() -> int:
    texts, _ = synthetic_texts()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    settings = {"rounds": 3, "warmup": 1.0, "seconds": 4.0}
    result = {"date": stamp, "machine_start": machine(), "settings": settings}
    servers = []
    try:
        servers = [stand_in("fastapi"), stand_in("litserve")]
        result["load"] = interleaved(servers, texts, (1, 32), **settings, background=0)
    finally:
        for s in servers:
            s.stop()
    result["machine_end"] = machine()
    out = ROOT / "bench" / "results" / f"serve-library-overhead-{stamp}.json"
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
