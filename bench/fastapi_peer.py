"""Peer (b): a FastAPI app written the way a typical user would.

A pydantic body model for the TF Serving request, an ``async def`` endpoint, ``np.array`` of the
validated lists, and a dict returned for FastAPI to serialise. (A plain ``def`` endpoint, which
FastAPI runs in its thread pool, measured well under half as fast with 1 image here, so the
peer gets the faster of the two usual spellings.) Served by ``uvicorn bench.fastapi_peer:app``;
the SavedModel folder comes from ``$BENCH_SAVED_MODEL``.
"""

import os
from typing import List, Optional

import numpy as np
import tensorflow as tf
from fastapi import FastAPI
from pydantic import BaseModel

model = tf.saved_model.load(os.environ["BENCH_SAVED_MODEL"])
infer = model.signatures["serving_default"]
input_name = list(infer.structured_input_signature[1].keys())[0]

app = FastAPI()


class PredictRequest(BaseModel):
    signature_name: Optional[str] = None
    instances: List[List[List[List[float]]]]


@app.post("/v1/models/MLP:predict")
async def predict(request: PredictRequest):
    images = np.array(request.instances, dtype=np.float32)
    outputs = infer(**{input_name: tf.constant(images)})
    probabilities = list(outputs.values())[0].numpy()
    return {"predictions": probabilities.tolist()}
