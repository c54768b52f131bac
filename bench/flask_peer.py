"""Peer (a): a Flask server written the way the tutorials do it.

stdlib ``json`` to parse, ``np.array`` of the nested list, the SavedModel's signature, and
``jsonify`` of ``.tolist()``, on Flask's built-in server with ``threaded=True``.
Run: ``python -m bench.flask_peer SAVED_MODEL_DIR PORT``.
"""

import json
import sys

import numpy as np
import tensorflow as tf
from flask import Flask, jsonify, request

app = Flask(__name__)
model = tf.saved_model.load(sys.argv[1])
infer = model.signatures["serving_default"]
input_name = list(infer.structured_input_signature[1].keys())[0]


@app.route("/v1/models/MLP:predict", methods=["POST"])
def predict():
    data = json.loads(request.data)
    images = np.array(data["instances"], dtype=np.float32)
    outputs = infer(**{input_name: tf.constant(images)})
    probabilities = list(outputs.values())[0].numpy()
    return jsonify({"predictions": probabilities.tolist()})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
