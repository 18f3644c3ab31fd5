"""The server a Hugging Face user writes for a checkpoint: FastAPI and ``pipeline("text-classification")``
called per request, no batching (the baseline of ``bench/serve_load.py``).

    ITHP_BASELINE_MODEL=DIR ITHP_BASELINE_THREADS=2 uvicorn hf_pipeline_server:app --app-dir bench/servers
"""

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

import ithp_fast  # noqa: F401  (registers ITHP-DeBERTa with transformers' Auto classes)

torch.set_num_threads(int(os.environ.get("ITHP_BASELINE_THREADS", torch.get_num_threads())))
classifier = pipeline("text-classification", model=os.environ["ITHP_BASELINE_MODEL"], device="cpu")
app = FastAPI()


class Texts(BaseModel):
    texts: list[str] | None = None
    text: str | None = None


@app.post("/predict")
def predict(body: Texts) -> dict:
    texts = body.texts if body.texts is not None else [body.text]
    return {"scores": [out["score"] for out in classifier(texts, truncation=True, function_to_apply="none")]}


@app.get("/health")
def health() -> dict:
    return {"status": "ready"}
