"""A stand-in model (score = the text's length) behind each server library with dynamic batching, to measure
what the library itself costs per request (``bench/serve_library_overhead.py``).

    python bench/servers/stand_in_servers.py fastapi|litserve PORT
"""

import sys


def score(texts):
    from ithp_fast.serving.tokens import ScoredTexts

    return ScoredTexts([float(len(t)) for t in texts], [False] * len(texts), 0, 0, True)


def fastapi_server(port: int) -> None:
    """``ithp-fast serve``'s application (FastAPI, uvicorn, its batcher) around the stand-in."""
    from ithp_fast.serving.app import ServedModel, create_app
    from ithp_fast.tools.serve_command import run_server

    run_server(create_app(ServedModel(score, "stand-in@0", 50), max_batch_size=32, max_wait_ms=5), "127.0.0.1", port,
               "stand-in")


def litserve_api():
    import litserve as ls

    class StandIn(ls.LitAPI):
        def setup(self, device):
            pass

        def decode_request(self, request):
            return request["text"]

        def predict(self, texts):
            return score(list(texts)).scores

        def encode_response(self, output):
            return {"scores": [output], "truncated": [False], "model": "stand-in@0", "eval_sampling": "mean"}

    return StandIn


def litserve_server(port: int) -> None:
    """LitServe's batching (its own request and response processes around a worker) around the stand-in."""
    import litserve as ls

    api = StandIn(max_batch_size=32, batch_timeout=0.005)
    ls.LitServer(api, accelerator="cpu", workers_per_device=1).run(port=port, generate_client_file=False)


if "litserve" in sys.argv:  # LitServe pickles the API class into its worker process: defined at module level
    StandIn = litserve_api()
    StandIn.__qualname__ = "StandIn"

if __name__ == "__main__":
    {"fastapi": fastapi_server, "litserve": litserve_server}[sys.argv[1]](int(sys.argv[2]))
