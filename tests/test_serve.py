"""``ithp-fast serve``: the server in a subprocess on a free loopback port (always stopped in teardown), concurrent
callers each given their own scores (equal to ``model.predict``), every bad request a 4xx with a message, a failure
inside the model a 500 for that request alone, SIGTERM answering the requests in flight, a restart from the cached
export; the batcher in-process; the int8 export."""

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from helpers import LONG, refuse_imports, stand_in_scores, tiny_text_model
from helpers import TEXTS as SAMPLE_TEXTS

from ithp_fast.serving.batcher import DynamicBatcher
from ithp_fast.serving.bundle import BundleScorer
from ithp_fast.serving.onnx_cache import cache_key
from ithp_fast.serving.tokens import length_groups
from ithp_fast.tools.cli import main

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
TEXTS = SAMPLE_TEXTS + ["good", "bad movie"]
START_TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body=None, content_type="application/json", timeout=60):
    """``(status, parsed JSON body)``; ``body`` bytes are sent as they are, anything else as JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


class Served:
    """A server process: ``argv`` on ``port``, its output in ``log``."""

    def __init__(self, argv: list, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.out = open(log, "w")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, "TRITON_INTERPRET": "0"})
        self.started = time.perf_counter()

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> float:
        while time.perf_counter() - self.started < timeout:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if request(self.port, "GET", "/health", timeout=5)[0] == 200:
                    return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"not healthy after {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> bool:
        """SIGTERM, and whether the server then exited cleanly (uvicorn ends by the signal it received)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        return self.proc.returncode in (0, -signal.SIGTERM)


def serve(checkpoint, tmp_path, *extra) -> Served:
    port = free_port()
    argv = [sys.executable, "-m", "ithp_fast", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
            "--threads", "1", *map(str, extra)]
    return Served(argv, port, tmp_path / f"serve-{port}.log")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = tiny_text_model()
    directory = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    served = serve(model_dir, tmp_path_factory.mktemp("logs"), "--max-batch-size", 4, "--max-wait-ms", 50,
                   "--max-texts", 5)
    try:
        served.wait_healthy()
        yield served
    finally:
        assert served.stop(), served.log.read_text()[-3000:]


def test_concurrent_callers_each_get_their_own_scores(server, model_dir):
    model = tiny_text_model()
    asks = [{"text": t} for t in TEXTS] * 3 + [{"texts": TEXTS[:3]}, {"texts": [LONG, TEXTS[4]]}, {"texts": TEXTS[:5]}]
    before = request(server.port, "GET", "/health")[1]
    with ThreadPoolExecutor(len(asks)) as pool:
        answers = list(pool.map(lambda body: request(server.port, "POST", "/predict", body), asks))
    after = request(server.port, "GET", "/health")[1]
    for body, (status, answer) in zip(asks, answers):
        texts = body.get("texts") or [body["text"]]
        assert status == 200, answer
        assert answer["scores"] == pytest.approx(model.predict(texts), abs=1e-5), texts
        assert answer["truncated"] == [t == LONG for t in texts]
        assert answer["eval_sampling"] == "mean" and answer["model"].startswith("tiny@")
    texts = after["texts"] - before["texts"]
    assert texts == sum(len(b.get("texts", [0])) for b in asks)
    assert after["batches"] - before["batches"] < len(asks), "no two requests were batched together"


@pytest.mark.parametrize("body, content_type, status, message", [
    (b'{"texts": ["a good movie"', "application/json", 400, "malformed JSON"),
    (b"", "application/json", 400, "empty body"),
    ({}, "application/json", 422, 'give either "texts" (a list of strings) or "text" (a string)'),
    ({"text": "good", "texts": ["bad"]}, "application/json", 422, 'give either "texts"'),
    ({"txt": "good"}, "application/json", 422, "txt: unknown field"),
    ({"texts": ["good", 3]}, "application/json", 422, "texts[1]: expected a string, got int"),
    ({"text": 3.5}, "application/json", 422, "text: expected a string, got float"),
    ({"texts": "good"}, "application/json", 422, "texts: expected a list of strings, got str"),
    ([1, 2], "application/json", 422, 'expected a JSON object {"texts": [...]} or {"text": "..."}'),
    ({"texts": []}, "application/json", 422, "texts: empty list"),
    ({"texts": ["good", "  "]}, "application/json", 422, "texts[1]: empty text"),
    ({"texts": ["good"] * 6}, "application/json", 413, "6 texts, more than this server takes in one request (5)"),
    (b'{"text": "good"}', "text/plain", 415, "expected Content-Type: application/json, got text/plain"),
])
def test_every_bad_request_is_a_4xx_with_a_message(server, body, content_type, status, message):
    got, answer = request(server.port, "POST", "/predict", body, content_type)
    assert got == status, answer
    assert set(answer) == {"detail"} and message in answer["detail"] and "\n" not in answer["detail"], answer
    assert request(server.port, "POST", "/predict", {"text": "good"})[0] == 200


def test_metadata_health_and_the_schema(server, model_dir):
    status, meta = request(server.port, "GET", "/metadata")
    assert status == 200
    assert meta["checkpoint"] == str(model_dir) and meta["max_tokens"] == 8 and meta["output_range"] == [-3, 3]
    assert "sentiment score" in meta["output"] and meta["ithp_fast_version"] and meta["runtime"] == "onnxruntime"
    assert (meta["max_batch_size"], meta["max_wait_ms"], meta["max_texts"]) == (4, 50, 5)
    assert request(server.port, "GET", "/health")[1]["status"] == "ready"
    schema = request(server.port, "GET", "/openapi.json")[1]
    post = schema["paths"]["/predict"]["post"]
    assert set(post["responses"]) >= {"200", "400", "413", "422", "500"}
    assert set(schema["components"]["schemas"]["PredictRequest"]["properties"]) == {"texts", "text"}


def test_a_restart_reads_the_cached_export_and_is_healthy_within_5_s(server, model_dir, tmp_path):
    cache = Path(str(model_dir) + ".onnx-cache")
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")], "no export kept beside the checkpoint"
    again = serve(model_dir, tmp_path)
    try:
        seconds = again.wait_healthy()
        assert request(again.port, "POST", "/predict", {"text": TEXTS[0]})[1]["scores"] == pytest.approx(
            tiny_text_model().predict(TEXTS[:1]), abs=1e-5)
    finally:
        assert again.stop()
    assert "exporting" not in again.log.read_text()
    assert seconds < 5, f"healthy after {seconds:.1f} s"


def test_the_cache_key_follows_the_model_files_and_nothing_else(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for name, data in (("config.json", b"{}"), ("model.safetensors", b"weights"), ("tokenizer.json", b"{}"),
                       ("optimizer.safetensors", b"state"), ("trainer_state.json", b"{}")):
        (checkpoint / name).write_bytes(data)
    key = cache_key(str(checkpoint))
    (checkpoint / "optimizer.safetensors").write_bytes(b"state, a step later")
    (checkpoint / "trainer_state.json").write_bytes(b'{"step": 2}')
    assert cache_key(str(checkpoint)) == key  # training state: the same model
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        (checkpoint / name).write_bytes(b"changed")
        assert cache_key(str(checkpoint)) != key, name
        key = cache_key(str(checkpoint))


def test_int8_serves_scores_near_float32(server, model_dir, tmp_path):
    quantised = serve(model_dir, tmp_path, "--quantize", "int8")
    try:
        quantised.wait_healthy()
        status, answer = request(quantised.port, "POST", "/predict", {"texts": TEXTS[:5]})
    finally:
        quantised.stop()
    assert status == 200
    floats = request(server.port, "POST", "/predict", {"texts": TEXTS[:5]})[1]["scores"]
    assert answer["scores"] == pytest.approx(floats, abs=0.1) and answer["scores"] != floats


def test_texts_grouped_by_length_score_as_one_padded_batch(server, model_dir):
    program = next(Path(str(model_dir) + ".onnx-cache").glob("*/model.onnx"))
    scorer = BundleScorer(str(program))
    texts = [LONG, "good", TEXTS[3], "bad movie", TEXTS[0], "not good"]
    together = scorer.score(texts).scores
    scorer.per_call, scorer.per_token = 0.0, 1.0  # every length its own run
    assert scorer.score(texts).scores == pytest.approx(together, abs=1e-6)
    per_call, per_token = scorer.calibrate(rows=2, repeats=1)
    assert per_call > 0 and per_token >= 0


def test_length_groups_trade_runs_against_padding():
    lengths = torch.tensor([4, 20, 4, 20]).numpy()

    def groups(per_call, per_token):
        return sorted(sorted(g.tolist()) for g in length_groups(lengths, per_call, per_token))

    assert groups(1.0, 1.0) == [[0, 2], [1, 3]]  # padding 4 to 20 costs more than a run
    assert groups(100.0, 1.0) == [[0, 1, 2, 3]]  # a run costs more than the padding
    assert groups(0.0, 1.0) == [[0, 2], [1, 3]]  # equal lengths share a run at no cost
    assert groups(1.0, 0.0) == [[0, 1, 2, 3]]  # nothing measured: one run


def test_export_quantize_int8_writes_one_program_beside_its_tokenizer(server, model_dir, tmp_path, capsys):
    output = tmp_path / "bundle" / "model.onnx"
    output.parent.mkdir()
    assert main(["export", "--checkpoint", str(model_dir), "--format", "onnx", "--output", str(output),
                 "--quantize", "int8"]) == 0
    assert sorted(p.name for p in output.parent.iterdir()) == ["model.onnx", "tokenizer.json", "tokenizer_config.json"]
    floats = request(server.port, "POST", "/predict", {"texts": TEXTS[:5]})[1]["scores"]
    assert BundleScorer(str(output)).score(TEXTS[:5]).scores == pytest.approx(floats, abs=0.1)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(model_dir), "--format", "aoti", "--output", str(tmp_path / "m.pt2"),
                 "--quantize", "int8"]) == 2
    assert "--quantize: int8 quantises an ONNX program" in capsys.readouterr().err


# -- failures and shutdown, on a stand-in model (the application and the batcher, not the network)

FAKE_SERVER = """
import sys, time, uvicorn
sys.path.insert(0, {tests!r})
from helpers import stand_in_scores
from ithp_fast.serving.app import ServedModel, create_app
from ithp_fast.tools.serve_command import run_server

def score(texts):
    time.sleep(float(sys.argv[2]))
    if "boom" in texts or sys.argv[3:] == ["broken"]:
        raise RuntimeError("the stand-in model fails on 'boom'")
    return stand_in_scores(texts)

app = create_app(ServedModel(score, "stand-in@0", 8), max_batch_size=8, max_wait_ms=20)
run_server(app, "127.0.0.1", int(sys.argv[1]), "stand-in")
"""


def fake_server(tmp_path, seconds_per_batch: float, *extra: str, healthy: bool = True) -> Served:
    port = free_port()
    script = tmp_path / "fake_server.py"
    script.write_text(textwrap.dedent(FAKE_SERVER).format(tests=str(ROOT / "tests")))
    served = Served([sys.executable, str(script), str(port), str(seconds_per_batch), *extra], port,
                    tmp_path / "fake.log")
    if healthy:
        served.wait_healthy(60)
    return served


def test_a_model_that_cannot_warm_up_is_never_healthy_and_says_why(tmp_path):
    served = fake_server(tmp_path, 0.0, "broken", healthy=False)
    try:
        for _ in range(600):
            try:
                status, answer = request(served.port, "GET", "/health", timeout=5)
                if answer["status"] != "warming up":
                    break
            except OSError:
                pass
            time.sleep(0.05)
        assert status == 503 and answer["status"].startswith("failed to warm up: RuntimeError"), answer
        assert request(served.port, "POST", "/predict", {"text": "good"})[0] == 503
    finally:
        assert served.stop()


def test_a_model_failure_is_a_500_for_that_request_and_the_server_goes_on(tmp_path):
    served = fake_server(tmp_path, 0.05)
    try:
        asks = [{"text": "boom"}, {"texts": ["ok", "fine"]}, {"text": "good"}, {"texts": ["x", "boom"]}] * 2
        with ThreadPoolExecutor(len(asks)) as pool:
            answers = list(pool.map(lambda body: request(served.port, "POST", "/predict", body), asks))
        for body, (status, answer) in zip(asks, answers):
            if "boom" in (body.get("texts") or [body.get("text")]):
                assert status == 500 and "RuntimeError: the stand-in model fails on 'boom'" in answer["detail"]
            else:
                assert status == 200 and answer["scores"] == [float(len(t)) for t in body.get("texts", [body.get(
                    "text")])]
        assert request(served.port, "POST", "/predict", {"text": "still here"})[1]["scores"] == [10.0]
    finally:
        assert served.stop()


def test_sigterm_answers_every_request_in_flight(tmp_path):
    served = fake_server(tmp_path, 0.25)
    try:
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(request, served.port, "POST", "/predict", {"text": "x" * (i + 1)})
                       for i in range(12)]
            time.sleep(0.3)  # every request sent; batches of up to 8 take 0.25 s each
            served.proc.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=30) for f in futures]
        assert served.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        served.stop()
    assert [status for status, _ in answers] == [200] * 12, answers
    assert [a["scores"] for _, a in answers] == [[float(i + 1)] for i in range(12)]
    with pytest.raises(OSError):  # nothing listens any more: a new request is refused, not left hanging
        request(served.port, "GET", "/health", timeout=5)


def test_without_the_serve_extra_one_line_says_what_to_install(model_dir):
    block = refuse_imports("fastapi", "uvicorn") + textwrap.dedent("""
        from ithp_fast.tools.cli import main
        sys.exit(main(["serve", "--checkpoint", sys.argv[1]]))
    """)
    proc = subprocess.run([sys.executable, "-c", block, str(model_dir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ithp-fast serve: error: ithp-fast serve needs FastAPI and uvicorn: " \
                                  "pip install 'ithp_fast[serve]'"


@pytest.mark.parametrize("argv, message", [
    (["--max-batch-size", "0"], "--max-batch-size: expected a positive number, got 0"),
    (["--max-wait-ms", "-1"], "--max-wait-ms: expected a number >= 0, got -1.0"),
    (["--port", "70000"], "--port: expected a port number, 0 to 65535, got 70000"),
    (["--device", "tpu"], "--device: expected cpu, cuda or cuda:N, got 'tpu'"),
    (["--device", "cuda", "--quantize", "int8"], "--quantize: int8 is ONNX Runtime's CPU quantisation"),
    (["--device", "cuda", "--runtime", "onnxruntime"], "--runtime: onnxruntime serves on the CPU"),
    (["--runtime", "torch", "--quantize", "int8"], "--quantize: int8 is ONNX Runtime's; with --runtime torch"),
])
def test_bad_options_are_one_line(model_dir, capsys, argv, message):
    capsys.readouterr()
    assert main(["serve", "--checkpoint", str(model_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"ithp-fast serve: error: {message}"), err


def test_a_folder_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path)]) == 2
    assert "holds no config.json" in capsys.readouterr().err


def torch_runtime_answers(model_dir, tmp_path, *extra) -> dict:
    """Concurrent requests to ``ithp-fast serve --runtime torch``: each answer equals ``model.predict``; the
    metadata returned."""
    served = serve(model_dir, tmp_path, "--runtime", "torch", *extra)
    try:
        served.wait_healthy()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: request(served.port, "POST", "/predict", {"texts": [t, LONG]}), TEXTS))
        meta = request(served.port, "GET", "/metadata")[1]
    finally:
        assert served.stop()
    model = tiny_text_model()
    for text, (status, answer) in zip(TEXTS, answers):
        assert status == 200 and answer["scores"] == pytest.approx(model.predict([text, LONG]), abs=1e-5)
    return meta


def test_the_torch_runtime_on_the_cpu_answers_as_predict(model_dir, tmp_path):
    meta = torch_runtime_answers(model_dir, tmp_path)
    assert meta["runtime"] == "torch" and meta["device"] == "cpu"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_server_runs_cuda_graphs_and_answers_as_predict(model_dir, tmp_path):
    assert torch_runtime_answers(model_dir, tmp_path, "--device", "cuda")["runtime"] == "torch, CUDA graphs"


# -- the batcher in-process


def run_batcher(score, asks, **settings):
    async def go():
        batcher = DynamicBatcher(score, **settings)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(texts) for texts in asks), return_exceptions=True), batcher
        finally:
            await batcher.stop()

    return asyncio.run(go())


def test_the_batcher_splits_large_requests_and_keeps_failures_to_their_request():
    calls = []

    def score(texts):
        calls.append(len(texts))
        if "boom" in texts:
            raise ValueError("boom")
        return stand_in_scores(texts)

    asks = [["a"] * 7, ["bb", "boom"], ["ccc"]]
    answers, _ = run_batcher(score, asks, max_batch_size=3, max_wait_ms=0)
    assert answers[0] == ([1.0] * 7, [False] * 7) and answers[2] == ([3.0], [False])
    assert isinstance(answers[1], ValueError)
    assert max(calls) <= 3


def test_a_single_caller_does_not_wait_for_a_batch_to_fill():
    start = time.perf_counter()
    answers, _ = run_batcher(stand_in_scores, [["one"]], max_batch_size=32, max_wait_ms=5000)
    assert answers == [([3.0], [False])] and time.perf_counter() - start < 2
