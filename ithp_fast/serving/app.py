"""The HTTP endpoint of ``ithp-fast serve``: a FastAPI application around a :class:`DynamicBatcher`.

* ``POST /predict``: ``{"texts": [...]}`` or ``{"text": "..."}`` -> ``{"scores": [...], "truncated": [...],
  "model": ..., "eval_sampling": "mean"}``, one score per text, in order; ``truncated`` says which texts
  had more tokens than the model reads and were cut to them.
* ``GET /health``: 200 ``{"status": "ready"}`` once the model has answered its warm-up texts; 503 before
  (``"warming up"``) and once the server is shutting down (``"draining"``), for a load balancer.
* ``GET /metadata``: the checkpoint, ithp_fast's version, the most tokens read, what a score means and
  its range, how the server batches.
* ``GET /openapi.json`` (and ``/docs``): the schema, from the request and response models below.

A bad request is a 4xx with ``{"detail": "one line"}``: malformed JSON 400; a missing or unknown field, a
text that is not a string or is empty, an empty list 422; more texts than ``max_texts`` 413. A failure
inside the model is a 500 with its message, for that request alone (:class:`DynamicBatcher`), and the
server goes on serving.

FastAPI is imported here only: ``pip install 'ithp_fast[serve]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from .batcher import DynamicBatcher
from .tokens import ScoredTexts

log = logging.getLogger("ithp_fast.serve")

WARM_UP_TEXT = "warm up"


@dataclass
class ServedModel:
    """What the application serves."""

    score: Callable[[Sequence[str]], ScoredTexts]
    """``texts -> ScoredTexts``, for up to the batcher's ``max_batch_size`` texts at a time."""
    name: str
    """The model's name in every answer (the checkpoint's folder and its checksum)."""
    max_tokens: int
    """Tokens per text at most, ``[CLS]`` and ``[SEP]`` included; longer texts are cut."""
    metadata: dict = field(default_factory=dict)
    """What ``GET /metadata`` says besides the batching settings."""


class PredictRequest(BaseModel):
    """One text or a list of texts to score."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"texts": ["I really love this movie", "the plot was dull"]}, {"text": "I really love this movie"}]})
    texts: Optional[list[StrictStr]] = Field(None, description="the texts to score (or give `text`)")
    text: Optional[StrictStr] = Field(None, description="one text to score (or give `texts`)")


class PredictResponse(BaseModel):
    """One score per text, in the order given."""

    scores: list[Union[float, list[float]]] = Field(
        description="the model's output per text: the sentiment score (a list per text for several outputs)")
    truncated: list[bool] = Field(description="per text: it had more tokens than the model reads and was cut")
    model: str = Field(description="the checkpoint's folder and the start of its files' SHA-256")
    eval_sampling: Literal["mean"] = Field(description="ITHP's latent is its posterior mean: one text, one score")


class Problem(BaseModel):
    detail: str


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": " ".join(str(message).split())}, status_code=status)


def validation_message(err: RequestValidationError) -> tuple[int, str]:
    """``(status, one line)`` for what FastAPI's request validation found."""
    first = err.errors()[0]
    kind, where = first.get("type", ""), [str(p) for p in first.get("loc", ()) if p != "body"]
    if kind == "json_invalid":
        return 400, f"malformed JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
    if kind == "missing" and not where:
        return 400, 'empty body; expected a JSON object {"texts": [...]} or {"text": "..."}'

    if kind in ("model_attributes_type", "dict_type") or not where:
        return 422, 'expected a JSON object {"texts": [...]} or {"text": "..."}'
    name = where[0] + "".join(f"[{p}]" for p in where[1:])
    if kind == "extra_forbidden":
        return 422, f'{name}: unknown field; expected "texts" (a list of strings) or "text" (a string)'
    if kind == "string_type":
        return 422, f"{name}: expected a string, got {type(first.get('input')).__name__}"
    if kind == "list_type":
        return 422, f"{name}: expected a list of strings, got {type(first.get('input')).__name__}"
    return 422, f"{name}: {first.get('msg')}"


def request_texts(body: PredictRequest, max_texts: int) -> tuple[int, Union[str, list[str]]]:
    """``(0, texts)`` for a good request, else ``(status, message)``."""
    if (body.texts is None) == (body.text is None):
        return 422, 'give either "texts" (a list of strings) or "text" (a string)'
    texts = [body.text] if body.text is not None else body.texts
    name = "text" if body.text is not None else "texts"
    if not texts:
        return 422, "texts: empty list; give at least one text"
    if len(texts) > max_texts:
        return 413, f"texts: {len(texts)} texts, more than this server takes in one request ({max_texts}); split them"
    for i, text in enumerate(texts):
        if not text.strip():
            return 422, f"{name if name == 'text' else f'texts[{i}]'}: empty text; there are no words to score"
    return 0, texts


def create_app(model: ServedModel, *, max_batch_size: int = 32, max_wait_ms: float = 5.0,
               max_texts: int = 256) -> FastAPI:
    """The application serving ``model``: batches of up to ``max_batch_size`` texts, waiting at most
    ``max_wait_ms`` for a batch to fill, at most ``max_texts`` texts per request."""
    batcher = DynamicBatcher(model.score, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
    state = {"status": "warming up"}

    async def warm_up() -> None:
        longest = " ".join([WARM_UP_TEXT] * model.max_tokens)
        try:
            for texts in ([WARM_UP_TEXT], [longest] * min(2, max_batch_size), [WARM_UP_TEXT]):
                await batcher.submit(texts)
        except Exception as err:  # the model cannot score: /health says so, and stays 503
            log.exception("warm-up failed")
            state["status"] = f"failed to warm up: {type(err).__name__}: {err}"
            return
        if state["status"] == "warming up":
            state["status"] = "ready"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        warming = asyncio.create_task(warm_up())
        try:
            yield
        finally:
            state["status"] = "draining"
            await warming
            await batcher.stop()

    from ..version import __version__

    app = FastAPI(title="ITHP-DeBERTa", version=__version__,
                  description="Sentiment scores of texts from an ITHP-DeBERTa checkpoint (ithp-fast serve).",
                  lifespan=lifespan)
    app.state.serving = state

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type", "")
        if request.url.path == "/predict" and "json" not in kind:
            return error(415, f"expected Content-Type: application/json, got {kind or 'none'}")
        return error(*validation_message(err))

    @app.post("/predict", response_model=PredictResponse,
              responses={400: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem},
                         500: {"model": Problem}, 503: {"model": Problem}})
    async def predict(body: PredictRequest) -> JSONResponse:
        """Score texts: one score per text, in order."""
        status, texts = request_texts(body, max_texts)
        if status:
            return error(status, texts)
        if state["status"] != "ready":
            return error(503, f"the server is {state['status']}; retry shortly")
        try:
            scores, cut = await batcher.submit(texts)
        except Exception as err:  # a failure inside the model: this request only
            log.exception("scoring failed")
            return error(500, f"the model failed on this request: {type(err).__name__}: {err}")
        if not all(_finite(s) for s in scores):
            return error(500, "the model gave a score that is not a finite number")
        return JSONResponse({"scores": scores, "truncated": cut, "model": model.name, "eval_sampling": "mean"})

    @app.get("/health", responses={503: {"model": Problem}})
    async def health() -> JSONResponse:
        """200 once the model is warm and the server takes requests; 503 while warming up or draining. Also
        counts the texts scored and the batches they ran in (warm-up included)."""
        ready = state["status"] == "ready"
        return JSONResponse({"status": state["status"], "texts": batcher.texts, "batches": batcher.batches},
                            status_code=200 if ready else 503)

    @app.get("/metadata")
    async def metadata() -> dict:
        """What the server serves and how."""
        return {"model": model.name, **model.metadata, "max_tokens": model.max_tokens,
                "max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms, "max_texts": max_texts,
                "eval_sampling": "mean"}

    return app


def _finite(score) -> bool:
    values = score if isinstance(score, list) else [score]
    return all(v - v == 0 for v in values)
