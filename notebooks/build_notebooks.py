"""Write the demo notebooks (``python notebooks/build_notebooks.py``).

The notebooks are generated so that they stay small, reviewable in diffs, and free of outputs;
``tests/test_notebooks.py`` checks that the committed ``.ipynb`` files match this script.
Each notebook has a cell tagged ``parameters`` (papermill-style) that picks tiny data and one
epoch when ``TFSERVE_MAGIC_HEADLESS=1`` (CI, ``make demo --quick``), and ends by stopping its
servers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

HEADLESS_NOTE = (
    "# Parameters (tagged `parameters`: papermill or the test runner may override them).\n"
    "# Unattended runs set TFSERVE_MAGIC_HEADLESS=1: a small slice of the data and one epoch.\n"
    "import os\n"
    "\n"
    'HEADLESS = os.environ.get("TFSERVE_MAGIC_HEADLESS") == "1"\n'
)

SETUP = """\
%load_ext tfserve_magic
import tfserve_magic as tfm

# TensorFlow's C++ start-up lines go to a log file instead of red boxes here (do this before
# importing tensorflow or keras; see the README)
tfm.quiet_tensorflow()
import keras
import numpy as np

from tfserve_magic.datasets import load_mnist

data = load_mnist(n_train=N_TRAIN, n_test=N_TEST)
print(f"{data.source}: train {data.x_train.shape}, test {data.x_test.shape}")"""

CLASSIC_MLP = """\
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(data.x_train, data.y_train, batch_size=50, epochs=EPOCHS, verbose=2)
_, test_accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
print(f"test accuracy in the notebook: {test_accuracy:.3f}")"""


def md(text: str):
    return ("markdown", text.strip("\n"))


def code(text: str):
    return ("code", text.strip("\n"))


def params(text: str):
    return ("parameters", HEADLESS_NOTE + text.strip("\n"))


# ----------------------------------------------------------------------------- 01 quickstart
QUICKSTART = [
    md("""
# 1 · Quickstart: train, export, serve and predict MNIST

The classic TensorFlow Serving REST tutorial in a few cells: train a small Keras MLP on MNIST,
export it as a numbered SavedModel, serve it with a TensorFlow-Serving-compatible REST server on
`127.0.0.1`, send the first ten test images and compare the answers with the labels.

The server is a child process of this kernel: `%tfserve stop` (or shutting the kernel down)
ends it.

> On mybinder.org you get 1-2 GB of RAM and no GPU, and an idle session is culled after about
> ten minutes: the defaults below fit. If the kernel restarts, run the notebook from the top.
"""),
    params("""
# 20,000 of the 60,000 training images: with all of them Keras' fit peaks near 1.2 GB, and with
# the server's ~0.6 GB that is too close to mybinder.org's 2 GB (None: all; fine on a laptop).
N_TRAIN = 2000 if HEADLESS else 20000
N_TEST = 500 if HEADLESS else None  # None: all 10,000 test images
EPOCHS = 1 if HEADLESS else 3
"""),
    md("""
`load_mnist` uses Keras' MNIST (cached after the first download; the Binder image downloads it
at build time). Without network it falls back to scikit-learn's bundled digits, scaled to 28x28,
and says so.
"""),
    code(SETUP),
    md("""
## Train the classic MLP

A `Sequential` model without an `Input` layer, trained with `batch_size=50`, as in the classic
tutorial. Saved with a plain `tf.saved_model.save` on Keras 3, this model would keep a fixed batch
dimension of 50; `%tfserve export` writes a free batch dimension and checks the export.
"""),
    code(CLASSIC_MLP),
    md("""
## Export

`%tfserve export MODEL BASE_PATH` writes the next numbered version (`./saved/1`), reloads it and
compares its answers with the live model. The result lists the signatures and the equivalent
`tensorflow_model_server` command.
"""),
    code("""
exported = %tfserve export model ./saved
exported"""),
    md("""
## Serve

`%tfserve start NAME BASE_PATH` starts a REST server (port 8501, or the next free one) that
watches `./saved` for new versions, waits until the model is `AVAILABLE`, and reuses a running
server of the same name. The handle holds the URL, pid and log path.
"""),
    code("""
server = %tfserve start MLP ./saved
server"""),
    md("""
## Predict

`%%predict` sends the cell's value as TF Serving `instances` and, with `--labels`, shows each
prediction beside its label. `-o first_ten` keeps the result in a variable.
"""),
    code("""
%%predict MLP --labels data.y_test[:10] -o first_ten
data.x_test[:10]"""),
    md("The same request from plain Python, with the package's `Client`:"),
    code("""
client = tfm.Client("MLP")
prediction = client.predict(data.x_test[:10])
predicted = np.asarray(prediction).argmax(axis=-1)
print("predicted:", predicted)
print("true:     ", data.y_test[:10])
right = (predicted == data.y_test[:10]).sum()
print(f"{right} of 10 right in {prediction.latency_s * 1000:.1f} ms")"""),
    md("""
The whole test set through the server (the client splits it into requests of 1000 images): the
served model's accuracy matches the one Keras measured before the export.
"""),
    code("""
served = np.asarray(client.predict(data.x_test)).argmax(axis=-1)
served_accuracy = (served == data.y_test).mean()
print(f"served accuracy {served_accuracy:.4f}, in the notebook {test_accuracy:.4f}")
assert abs(served_accuracy - test_accuracy) < 0.01, (served_accuracy, test_accuracy)"""),
    md("""
## Explore the predictions

A gallery of test images with their predicted and true labels, filters for the mistakes, and a
confusion matrix (the predictions come from the server).
"""),
    code("%tfserve explore MLP data.x_test data.y_test -n 200"),
    md("## What is running"),
    code("%tfserve list"),
    code("%tfserve status MLP"),
    md("## Stop the server"),
    code("%tfserve stop MLP"),
    md("""
Next: `02_custom_models.ipynb` (subclassed models, signatures, several inputs),
`03_versions.ipynb` (hot reload, version labels), `04_draw_digit.ipynb` and
`05_any_client.ipynb` (curl, requests, Node.js, the production command).
"""),
]

# ----------------------------------------------------------------------------- 02 custom models
CUSTOM = [
    md("""
# 2 · Custom models and signatures

A subclassed Keras model served with a named `call` signature, requests that choose the signature
with `signature_name`, the model metadata a client can read, and a model with two named inputs
called in the columnar (`inputs`) format.
"""),
    params("""
N_TRAIN = 2000 if HEADLESS else 20000
N_TEST = 300 if HEADLESS else 2000
EPOCHS = 1 if HEADLESS else 2
"""),
    code(SETUP),
    md("""
## A subclassed model with a `call` signature

On Keras 3, decorating `call` with `@tf.function(input_signature=...)` breaks training ("No
gradients provided"). Keep `call` plain, and name the signature at export time instead:
`--signature call=call` publishes the method `call` as the signature `call` (next to
`serving_default`), and `--input-signature` gives the shapes a subclassed model cannot tell.
"""),
    code('''
class DigitClassifier(keras.Model):
    """A subclassed model: layers in __init__, the forward pass in call."""

    def __init__(self, hidden=64):
        super().__init__()
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(hidden, activation="relu")
        self.scores = keras.layers.Dense(10, activation="softmax")

    def call(self, images):
        return self.scores(self.hidden(self.flatten(images)))


keras.utils.set_random_seed(0)
custom = DigitClassifier()
custom.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = custom.fit(data.x_train, data.y_train, batch_size=64, epochs=EPOCHS, verbose=2)'''),
    code(
        "%tfserve export custom ./custom --signature call=call"
        " --input-signature float32[None,28,28,1]"
    ),
    code("%tfserve start Custom ./custom"),
    md("""
## Requests with `signature_name`

`--signature call` puts `"signature_name": "call"` in the request body; without it the server
uses `serving_default`. Both run the same function here.
"""),
    code("""
%%predict Custom --signature call --labels data.y_test[:5]
data.x_test[:5]"""),
    code("""
client = tfm.Client("Custom")
by_call = np.asarray(client.predict(data.x_test[:5], signature_name="call"))
by_default = np.asarray(client.predict(data.x_test[:5]))
print("call:           ", by_call.argmax(-1))
print("serving_default:", by_default.argmax(-1))
assert np.allclose(by_call, by_default, atol=1e-5)"""),
    md("""
## Metadata

`GET /v1/models/Custom/metadata` lists every signature with its input and output names, dtypes and
shapes (`-1` is a free dimension). A client reads the input names from here.
"""),
    code("""
metadata = client.metadata()
for name in metadata:
    print(metadata.describe(name))"""),
    code("%tfserve stop Custom"),
    md("""
## A multi-input model in columnar form

A functional model with two named inputs: the image, and a hand-made feature (the share of lit
pixels). Named `keras.Input`s keep their names in the SavedModel, so requests can use them.
The columnar format sends one array per input name (`{"inputs": {"image": ..., "ink": ...}}`);
`--columnar` asks `%%predict` for it.
"""),
    code("""
def ink_share(images):
    \"\"\"Share of pixels brighter than 0.5, one float per image (shape [N, 1]).\"\"\"
    return (images > 0.5).mean(axis=(1, 2, 3)).reshape(-1, 1).astype("float32")


keras.utils.set_random_seed(0)
image = keras.Input(shape=(28, 28, 1), name="image")
ink = keras.Input(shape=(1,), name="ink")
features = keras.layers.Concatenate()([keras.layers.Flatten()(image), ink])
hidden = keras.layers.Dense(64, activation="relu")(features)
scores = keras.layers.Dense(10, activation="softmax", name="scores")(hidden)
multi = keras.Model(inputs={"image": image, "ink": ink}, outputs=scores)
multi.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = multi.fit(
    {"image": data.x_train, "ink": ink_share(data.x_train)},
    data.y_train,
    batch_size=64,
    epochs=EPOCHS,
    verbose=2,
)"""),
    code("%tfserve export multi ./multi"),
    code("%tfserve start Multi ./multi"),
    code("""
%%predict Multi --columnar --labels data.y_test[:5]
dict(image=data.x_test[:5], ink=ink_share(data.x_test[:5]))"""),
    md("The same request with the Python client (`inputs=` is the columnar form):"),
    code("""
multi_client = tfm.Client("Multi")
print(multi_client.metadata().describe())
columnar = multi_client.predict(
    inputs={"image": data.x_test[:5], "ink": ink_share(data.x_test[:5])}
)
print("predicted:", np.asarray(columnar).argmax(-1), "true:", data.y_test[:5])"""),
    code("%tfserve stop Multi"),
]

# ----------------------------------------------------------------------------- 03 versions
VERSIONS = [
    md("""
# 3 · Versions and hot reload

TensorFlow Serving watches a base path: a new numbered folder becomes a new version, loaded
while the server keeps answering. Here a weak v1 is served, a better v2 is exported next to it
while the server runs, and the server switches to it. Then both versions are served side by
side with the labels `stable` and `canary` from a model config file, and compared against the
true labels.
"""),
    params("""
N_TRAIN = 2000 if HEADLESS else 20000  # None: all 60,000 (needs more than Binder's 2 GB)
N_TEST = 500 if HEADLESS else 10000
EPOCHS = 1 if HEADLESS else 3
SWITCH_TIMEOUT_S = 60  # how long to wait for the server to load version 2
"""),
    code(SETUP),
    md("""
## Version 1: a deliberately small model

16 hidden units, a tenth of the training data, one epoch.
"""),
    code("""
def mlp(hidden):
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1), name="images"),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


keras.utils.set_random_seed(0)
v1 = mlp(16)
v1.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
x_small, y_small = data.x_train[: len(data.x_train) // 10], data.y_train[: len(data.y_train) // 10]
history = v1.fit(x_small, y_small, batch_size=50, epochs=1, verbose=2)"""),
    md("""
`%tfserve export` writes the next free version number and returns what it wrote: keep it, and
use `.version` below rather than assuming `1` (a second Run All in this folder writes 3 and 4).
"""),
    code("""
exported_v1 = %tfserve export v1 ./digits
exported_v1"""),
    md("`--poll 1` makes the server look for new versions every second (TF Serving's "
       "`--file_system_poll_wait_seconds`)."),
    code("%tfserve start Digits ./digits --poll 1"),
    code("%tfserve status Digits"),
    md("""
## Version 2, exported while the server runs

More units, all the training data, more epochs. `%tfserve export` writes the next version
(`./digits/2` on the first run) atomically (the folder appears complete), so the server never
sees half a SavedModel.
"""),
    code("""
keras.utils.set_random_seed(1)
v2 = mlp(128)
v2.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = v2.fit(data.x_train, data.y_train, batch_size=50, epochs=EPOCHS, verbose=2)"""),
    code("""
exported_v2 = %tfserve export v2 ./digits
exported_v2"""),
    md("""
## Watch it switch

With the default policy (`latest`), the server loads the new version, then unloads the old one.
The requests keep being answered throughout.
"""),
    code("""
import time

client = tfm.Client("Digits")
new = exported_v2.version
deadline = time.monotonic() + SWITCH_TIMEOUT_S
while True:
    states = {int(v["version"]): v["state"] for v in client.status()}
    answered_by = client.metadata().version
    print(f"versions {states}, requests answered by version {answered_by}")
    if states.get(new) == "AVAILABLE" and answered_by == new:
        break
    if time.monotonic() > deadline:
        raise TimeoutError(f"version {new} was not served within {SWITCH_TIMEOUT_S} s: {states}")
    time.sleep(1)"""),
    code("%tfserve status Digits"),
    code("%tfserve stop Digits"),
    md("""
## Serve both versions with `stable` and `canary` labels

A TF Serving model config file: the `specific` policy keeps the two versions just exported
loaded, and `version_labels` names them. Requests pick a version with `--version N` or a label with
`--label L` (REST: `/v1/models/Digits/labels/canary:predict`).
"""),
    code("""
from pathlib import Path

stable, canary = exported_v1.version, exported_v2.version
config_text = f'''model_config_list {{
  config {{
    name: "Digits"
    base_path: "{Path("digits").resolve()}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: {stable} versions: {canary} }} }}
    version_labels {{ key: "stable" value: {stable} }}
    version_labels {{ key: "canary" value: {canary} }}
  }}
}}
'''
Path("models.config").write_text(config_text)
print(config_text)"""),
    code("%tfserve start Digits --config models.config"),
    code("""
%%predict Digits --label canary --labels data.y_test[:10]
data.x_test[:10]"""),
    md("## Compare v1 and v2 against the labels"),
    code("""
client = tfm.Client("Digits")
for label in ("stable", "canary"):
    predicted = np.asarray(client.predict(data.x_test, label=label)).argmax(-1)
    version = client.metadata(label=label).version
    accuracy = (predicted == data.y_test).mean()
    n = len(data.y_test)
    print(f"{label:<7} (version {version}): accuracy {accuracy:.3f} on {n} test images")"""),
    md("The compare widget shows where the two versions disagree, image by image:"),
    code("%tfserve compare Digits data.x_test data.y_test --a stable --b canary -n 300"),
    code("%tfserve stop Digits"),
]

# ----------------------------------------------------------------------------- 04 draw
DRAW = [
    md("""
# 4 · Draw a digit

Draw a digit with the mouse (or a finger); the strokes are turned into a 28x28 MNIST-style image
(cropped, scaled to 20 px, centred by centre of mass) and sent to the served model. The pad is an
[anywidget](https://anywidget.dev): it needs no front-end extension, so it works in JupyterLab,
Notebook 7, VS Code and Colab. Strokes can also be given from code, as done below.

Run All, then draw: the server keeps running for the pad after the last cell.
"""),
    params("""
N_TRAIN = 2000 if HEADLESS else 20000
N_TEST = 200 if HEADLESS else 1000
EPOCHS = 1 if HEADLESS else 3
# the pad is used after Run All, so the server keeps running; unattended runs stop it at the end
KEEP_SERVING = not HEADLESS
"""),
    code(SETUP),
    code(CLASSIC_MLP),
    code("%tfserve export model ./saved"),
    code("%tfserve start MLP ./saved"),
    md("Draw in the box, then press **Predict** (or let it predict when you lift the pen):"),
    code("%tfserve draw MLP --x data.x_test --y data.y_test"),
    md("""
## The same, driven from code

A '7' as two strokes in canvas coordinates (x to the right, y down), then a prediction: what a
mouse would do, runnable headless.
"""),
    code("""
from tfserve_magic.widgets import DrawDigit

pad = DrawDigit("MLP", live=False)


def draw(*strokes):
    \"\"\"What the mouse does for each stroke: press, move through the points, release.\"\"\"
    pad.clear()
    for points in strokes:
        pad.on_down(*points[0])
        for x, y in points[1:]:
            pad.on_move(x, y)
        pad.on_up()
    return pad.predict()


for name, strokes in {
    "a '1'": [[(140, 40), (140, 240)]],
    "a '7'": [[(70, 60), (210, 60), (120, 235)]],
}.items():
    probabilities = draw(*strokes)
    print(f"{name}: the model says {pad.top_class()} (probability {probabilities.max():.2f})")
pad"""),
    md("What the model received for the last drawing, and its answer:"),
    code("""
import matplotlib.pyplot as plt

fig, (left, right) = plt.subplots(1, 2, figsize=(6, 2.6))
left.imshow(np.squeeze(pad.current_image()), cmap="gray")
left.set_title("28x28 model input")
left.axis("off")
right.bar(range(10), probabilities)
right.set_xticks(range(10))
right.set_title(f"probabilities (top: {pad.top_class()})")
plt.tight_layout()
plt.show()"""),
    md("""
## Done drawing?

The server keeps answering the pad above. When you are done, stop it with `%tfserve stop MLP`
(shutting the kernel down stops it too). If it is gone, the pad offers to start it again.
"""),
    code("""
if KEEP_SERVING:
    print("MLP keeps serving the drawing pad; run %tfserve stop MLP when you are done.")
else:
    %tfserve stop MLP"""),
]

# ----------------------------------------------------------------------------- 05 any client
ANY_CLIENT = [
    md("""
# 5 · Any client: curl, Python requests, Node.js, gRPC, and production

The server speaks TensorFlow Serving's REST and gRPC APIs, so anything that can POST JSON, or
any client written with TF Serving's gRPC stubs, can use it. This notebook calls the same
server from the shell with `curl`, from plain Python with `requests`, from Node.js (when `node`
is installed), over gRPC with the official `tensorflow-serving-api` stubs, and shows the
`tensorflow_model_server` and Docker commands that serve the same SavedModel in production.
"""),
    params("""
N_TRAIN = 2000 if HEADLESS else 20000
N_TEST = 100 if HEADLESS else 1000
EPOCHS = 1 if HEADLESS else 3
"""),
    code(SETUP),
    code(CLASSIC_MLP),
    code("""
exported = %tfserve export model ./saved
server = %tfserve start MLP ./saved
print(server.url)"""),
    md("""
## The request body

TF Serving's row format: `{"instances": [...]}` with one entry per image. The first three
test images go to a file that every client below sends.
"""),
    code("""
import json

body = {"instances": data.x_test[:3].tolist()}
with open("request.json", "w") as f:
    json.dump(body, f)
url = f"{server.url}/v1/models/MLP:predict"
print(url, "true labels:", data.y_test[:3])"""),
    md("`--show curl` (or `python`, `node`) prints a ready-to-run request next to the answer:"),
    code("""
%%predict MLP --show curl --labels data.y_test[:3]
data.x_test[:3]"""),
    md("## curl"),
    code("""
import shutil
import subprocess

if shutil.which("curl"):
    command = ["curl", "-sS", "-X", "POST", "-d", "@request.json", url]
    answer = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    if "error" in answer:
        raise RuntimeError(f"the server answered: {answer['error']}")
    print("curl:", np.array(answer["predictions"]).argmax(-1))
else:
    print("curl is not installed here; the command would be:")
    print(f"curl -X POST -d @request.json {url}")"""),
    md("## Python `requests`"),
    code("""
import requests

reply = requests.post(url, json=body, timeout=30)
if not reply.ok:
    raise RuntimeError(f"HTTP {reply.status_code}: {reply.text}")
print("requests:", np.array(reply.json()["predictions"]).argmax(-1))
metadata = requests.get(f"{server.url}/v1/models/MLP/metadata", timeout=30).json()
signatures = metadata["metadata"]["signature_def"]["signature_def"]
print("signatures:", [name for name in sorted(signatures) if not name.startswith("__")])"""),
    md("## Node.js (built-in `fetch`, Node 18+)"),
    code("""
%%predict MLP --show node
data.x_test[:1]"""),
    code("""
NODE_CLIENT = '''
const fs = require("fs");
const [url, file] = process.argv.slice(2);
fetch(url, {method: "POST", body: fs.readFileSync(file)})
  .then(async (r) => {
    const answer = await r.json();
    if (!r.ok) throw new Error(`HTTP ${r.status}: ${answer.error}`);
    return answer;
  })
  .then((j) => console.log(JSON.stringify(j.predictions.map((p) => p.indexOf(Math.max(...p))))))
  .catch((e) => { console.error(e.message); process.exit(1); });
'''
if shutil.which("node"):
    with open("client.js", "w") as f:
        f.write(NODE_CLIENT)
    command = ["node", "client.js", url, "request.json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the Node.js client failed: {done.stderr}")
    print("node:", json.loads(done.stdout))
else:
    print("node is not installed here; client.js would print the predicted classes")"""),
    md("""
## gRPC: TensorFlow Serving's official Python stubs

The server also answers TF Serving's gRPC API (`PredictionService`, `ModelService`) on its gRPC
port. `%%predict --grpc` sends over it, and `--show grpc` prints the code with the official
stubs:
"""),
    code("""
%%predict MLP --grpc --show grpc --labels data.y_test[:3]
data.x_test[:3]"""),
    code("""
import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

print("gRPC at", server.grpc_target)
input_name = next(iter(tfm.Client("MLP").metadata()["serving_default"]["inputs"]))
with grpc.insecure_channel(server.grpc_target) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "MLP"
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(data.x_test[:3]))
    response = stub.Predict(request, 30.0)  # timeout in seconds
(output,) = response.outputs.values()
print("grpc:", tf.make_ndarray(output).argmax(-1), "from version", response.model_spec.version.value)
# The same without TensorFlow in the client process: tfm.Client("MLP", protocol="grpc")
print("tfm gRPC client:", tfm.Client("MLP", protocol="grpc").predict(data.x_test[:3]).argmax(-1))"""),
    md("""
## In production: `tensorflow_model_server` or Docker

The numbered folders under `./saved` are what TensorFlow Serving loads, so the same requests
work against its own binary or its Docker image. (`exported.server_command` holds the binary's
command too, with the folder name as the model name.)
"""),
    code("""
base_path = exported.base_path.resolve()
print("# the same SavedModel, model name, REST and gRPC APIs, with TensorFlow Serving's binary:")
print(
    "tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=MLP "
    f"--model_base_path={base_path}"
)
print()
print("# or with the official Docker image:")
print(
    f"docker run --rm -p 8500:8500 -p 8501:8501 "
    f"--mount type=bind,source={base_path},target=/models/MLP "
    "-e MODEL_NAME=MLP -t tensorflow/serving"
)"""),
    md("""
## One command for the real thing: `%tfserve deploy`

`%tfserve deploy MLP` takes what the running server serves (models, versions, labels, batching
and monitoring settings), checks that stock TensorFlow Serving can run it (the TensorFlow
version that wrote the model against the image tag, add-on ops, free batch dimensions), and
writes a recipe: `--target docker` (Dockerfile, compose.yaml, a README with the exact
commands and a smoke test), `--target kubernetes` (Deployment with probes and resources,
Service, `--max-replicas` for an autoscaler) or `--target kserve` (an InferenceService).
The clients above stay as they are; only the address changes (docs/deploy.md).
"""),
    code("""
recipe = %tfserve deploy MLP --target docker --out ./deploy/docker
print(recipe)
print(open("deploy/docker/Dockerfile").read())"""),
    code("""
%tfserve deploy MLP --target kserve --out ./deploy/kserve --storage-uri gs://YOUR-BUCKET/models
print(open("deploy/kserve/inferenceservice.yaml").read())"""),
    code("%tfserve stop MLP"),
]

# ----------------------------------------------------------------------------- 06 beyond images
BEYOND_CONFIG = """
from pathlib import Path

exports = {"Text": (text_v1, text_v2), "MPG": (mpg_v1, mpg_v2),
           "Titanic": (titanic_v1, titanic_v2)}
entries = [
    f'''  config {{
    name: "{name}"
    base_path: "{first.base_path.resolve()}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: {first.version} versions: {second.version} }} }}
  }}'''
    for name, (first, second) in exports.items()
]
config_text = "model_config_list {\\n" + "\\n".join(entries) + "\\n}\\n"
Path("beyond.config").write_text(config_text)
print(config_text)"""

BEYOND = [
    md("""
# 6 · Beyond images: text, a regression and a table

TensorFlow's first tutorials train more than image classifiers: a sentiment classifier on raw
movie reviews (strings in, `TextVectorization` inside the model), a regression on the Auto MPG
table (`Normalization` then `Dense(1)`), and a classifier on the Titanic table with one named
`keras.Input` per column. Here each one is trained small, exported with `%tfserve export`,
served, checked against the truth with `%%predict --labels` and `%tfserve explore`, and then a
second version is exported and compared with the first.

Without network the datasets fall back to documented offline stand-ins with the same columns
(generated reviews, synthetic tables) and say so; see `tfserve_magic.datasets`.
"""),
    params("""
N_TRAIN = 1000 if HEADLESS else None  # reviews to train on (None: all)
N_TEST = 200 if HEADLESS else None  # test reviews (None: all)
EPOCHS = 2 if HEADLESS else 10  # for the text classifier
TABLE_EPOCHS = 40 if HEADLESS else 100  # the tables are small: an epoch costs little
"""),
    code("""
%load_ext tfserve_magic
import tfserve_magic as tfm

# TensorFlow's C++ start-up lines go to a log file instead of red boxes here (do this before
# importing tensorflow or keras; see the README)
tfm.quiet_tensorflow()
import keras
import numpy as np

from tfserve_magic.datasets import load_auto_mpg, load_imdb, load_titanic"""),
    md("""
## 1 · Text: is a movie review positive?

Reviews as plain strings and 0/1 labels (1: positive). The model takes the strings themselves:
`TextVectorization` (adapted to the training reviews) turns them into word ids inside the model,
so the served model answers raw text, as in the tutorial's exported model.
"""),
    code("""
reviews = load_imdb(n_train=N_TRAIN, n_test=N_TEST)
print(f"{reviews.source}: {len(reviews.x_train)} training and {len(reviews.x_test)} test reviews")
print(repr(reviews.x_train[0]), "->", reviews.class_names[reviews.y_train[0]])"""),
    code("""
keras.utils.set_random_seed(0)
VOCABULARY = 10000
vectorize = keras.layers.TextVectorization(max_tokens=VOCABULARY, output_sequence_length=100)
vectorize.adapt(reviews.x_train)


def text_classifier(embedding_dim):
    \"\"\"strings -> word ids -> embeddings -> average -> one sigmoid (the text tutorial).\"\"\"
    text = keras.Input(shape=(), dtype="string", name="text")  # a batch of strings: [-1]
    # mask_zero: the average leaves out the padding after short reviews
    x = keras.layers.Embedding(VOCABULARY, embedding_dim, mask_zero=True)(vectorize(text))
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Dropout(0.2)(x))
    positive = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dropout(0.2)(x))
    model = keras.Model(text, positive)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


text_model = text_classifier(16)
history = text_model.fit(reviews.x_train, reviews.y_train, epochs=EPOCHS, verbose=2)"""),
    md("""
`%tfserve export` returns what it wrote; `text_v1.version` is the version number (1 the first
time, the next free one when the notebook runs again in this folder).
"""),
    code("""
text_v1 = %tfserve export text_model ./text
text_v1"""),
    code("%tfserve start Text ./text --poll 1"),
    md("`%%predict` with the reviews as a list of strings, beside their labels:"),
    code("""
%%predict Text --labels reviews.y_test[:8]
list(reviews.x_test[:8])"""),
    code("""
text_client = tfm.Client("Text")
positive = np.asarray(text_client.predict(list(reviews.x_test))).ravel()
text_accuracy = ((positive > 0.5) == reviews.y_test).mean()
print(f"Text: served accuracy {text_accuracy:.3f} on {len(positive)} test reviews")"""),
    md("The sentences beside their predictions and labels, with the mistakes a filter away:"),
    code("%tfserve explore Text reviews.x_test reviews.y_test -n 200"),
    md("""
A second version with a wider embedding, exported next to the first while the server runs
(`--poll 1`: the server loads it within a second or two):
"""),
    code("""
keras.utils.set_random_seed(1)
text_model_2 = text_classifier(32)
history = text_model_2.fit(reviews.x_train, reviews.y_train, epochs=EPOCHS + 1, verbose=2)
text_v2 = %tfserve export text_model_2 ./text
print(f"Text: exported versions {text_v1.version} and {text_v2.version}")"""),
    code("%tfserve stop Text"),
    md("""
## 2 · Regression: miles per gallon

Numeric columns (cylinders, displacement, horsepower, weight, acceleration, model year, and the
origin one-hot encoded) and the MPG target. As in the tutorial, `Normalization` learns each
column's mean and variance; version 1 is the linear model (`Dense(1)`), version 2 the small
deep network.
"""),
    code("""
cars = load_auto_mpg()
print(f"{cars.source}: train {cars.x_train.shape}, test {cars.x_test.shape}")
print(dict(zip(cars.feature_names, cars.x_train[0])), "->", cars.target_name, cars.y_train[0])"""),
    code("""
keras.utils.set_random_seed(0)
normalize = keras.layers.Normalization(axis=-1)
normalize.adapt(cars.x_train)


def mpg_model(hidden=()):
    \"\"\"Normalized columns -> (hidden ReLU layers) -> Dense(1): MPG.\"\"\"
    features = keras.Input(shape=(len(cars.feature_names),), name="features")
    x = normalize(features)
    for units in hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
    model = keras.Model(features, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(0.01 if hidden else 0.1),
                  loss="mean_absolute_error")
    return model


linear = mpg_model()
history = linear.fit(cars.x_train, cars.y_train, epochs=TABLE_EPOCHS, verbose=0)
print(f"linear model: test MAE {linear.evaluate(cars.x_test, cars.y_test, verbose=0):.2f} MPG")"""),
    code("""
mpg_v1 = %tfserve export linear ./mpg
%tfserve start MPG ./mpg --poll 1"""),
    code("""
%%predict MPG --labels cars.y_test[:8]
cars.x_test[:8]"""),
    code("""
mpg_client = tfm.Client("MPG")
predicted_mpg = np.asarray(mpg_client.predict(cars.x_test)).ravel()
errors = predicted_mpg - cars.y_test
print(f"MPG: served MAE {np.abs(errors).mean():.2f}, RMSE {np.sqrt((errors ** 2).mean()):.2f}")"""),
    md("Predicted against true MPG, the residuals and the worst errors with their inputs:"),
    code("%tfserve explore MPG cars.x_test cars.y_test"),
    code("""
keras.utils.set_random_seed(1)
deep = mpg_model(hidden=(64, 64))
history = deep.fit(cars.x_train, cars.y_train, epochs=TABLE_EPOCHS, verbose=0)
print(f"deep model: test MAE {deep.evaluate(cars.x_test, cars.y_test, verbose=0):.2f} MPG")
mpg_v2 = %tfserve export deep ./mpg
print(f"MPG: exported versions {mpg_v1.version} and {mpg_v2.version}")"""),
    code("%tfserve stop MPG"),
    md("""
## 3 · A table with named columns: who survived the Titanic?

Numbers (age, fare, family aboard) and words (sex, class, deck, town, travelling alone) in named
columns, and the 0/1 `survived`. As in the structured-data tutorial the model has one
`keras.Input` per column: `Normalization` for numbers, `StringLookup` (one-hot) for words. The
served model then takes the columns by name, strings as strings.

One trap: TensorFlow cannot write a signature whose input is named after a Python keyword
(`'class' is not a valid parameter name`), so the column `class` is renamed `travel_class`
before it names a `keras.Input`.
"""),
    code("""
passengers = load_titanic()
print(f"{passengers.source}: {len(passengers.y_train)} training and "
      f"{len(passengers.y_test)} test passengers")


def renamed(columns):
    \"\"\"The same columns, with `class` (a Python keyword) renamed `travel_class`.\"\"\"
    return {("travel_class" if name == "class" else name): values
            for name, values in columns.items()}


x_train, x_test = renamed(passengers.x_train), renamed(passengers.x_test)
print({name: column[0] for name, column in x_test.items()},
      "->", passengers.class_names[passengers.y_test[0]])"""),
    code("""
keras.utils.set_random_seed(0)
columns, encoded = {}, []
for name, values in x_train.items():
    if values.dtype == object:  # words: one-hot over the words seen in training
        columns[name] = keras.Input(shape=(), name=name, dtype="string")
        lookup = keras.layers.StringLookup(output_mode="one_hot")
        lookup.adapt(values)
        encoded.append(lookup(columns[name]))
    else:  # numbers: scaled to mean 0 and variance 1
        columns[name] = keras.Input(shape=(), name=name, dtype="float32")
        scale = keras.layers.Normalization(axis=None)
        scale.adapt(values)
        encoded.append(keras.layers.Reshape((1,))(scale(columns[name])))
features = keras.layers.Concatenate()(encoded)


def survival_model(units):
    \"\"\"Every column, encoded -> one hidden layer -> one sigmoid: P(survived).\"\"\"
    hidden = keras.layers.Dense(units, activation="relu")(features)
    survived = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dropout(0.2)(hidden))
    model = keras.Model(columns, survived)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


titanic_model = survival_model(8)
history = titanic_model.fit(x_train, passengers.y_train, epochs=TABLE_EPOCHS, verbose=0)
_, accuracy = titanic_model.evaluate(x_test, passengers.y_test, verbose=0)
print(f"test accuracy in the notebook: {accuracy:.3f}")"""),
    code("""
titanic_v1 = %tfserve export titanic_model ./titanic
%tfserve start Titanic ./titanic --poll 1"""),
    md("A dict of columns goes to the signature's inputs by name:"),
    code("""
%%predict Titanic --labels passengers.y_test[:8]
{name: column[:8] for name, column in x_test.items()}"""),
    code("""
titanic_client = tfm.Client("Titanic")
print(titanic_client.metadata().describe())
survived = np.asarray(titanic_client.predict(x_test)).ravel() > 0.5
print(f"Titanic: served accuracy {(survived == passengers.y_test).mean():.3f} "
      f"on {len(survived)} test passengers")"""),
    md("Each passenger as a row of column names and values, beside the prediction:"),
    code("%tfserve explore Titanic x_test passengers.y_test"),
    code("""
keras.utils.set_random_seed(1)
titanic_model_2 = survival_model(32)
history = titanic_model_2.fit(x_train, passengers.y_train, epochs=TABLE_EPOCHS, verbose=0)
titanic_v2 = %tfserve export titanic_model_2 ./titanic
print(f"Titanic: exported versions {titanic_v1.version} and {titanic_v2.version}")"""),
    code("%tfserve stop Titanic"),
    md("""
## 4 · Version against version

To compare two versions, both must be loaded. A TF Serving model config file with the
`specific` version policy does that, for all three models on one server. The version numbers
come from what the exports returned, so the notebook also works when it runs again in this
folder (the exports are then versions 3 and 4).
"""),
    code(BEYOND_CONFIG),
    code("%tfserve start Beyond --config beyond.config"),
    md("Each version against the truth, from plain Python:"),
    code("""
def served(name, x, version):
    return np.asarray(tfm.Client(name).predict(x, version=version)).ravel()


for name, (first, second) in exports.items():
    for export in (first, second):
        if name == "Text":
            score = ((served(name, list(reviews.x_test), export.version) > 0.5)
                     == reviews.y_test).mean()
        elif name == "MPG":
            score = np.abs(served(name, cars.x_test, export.version) - cars.y_test).mean()
        else:
            score = ((served(name, x_test, export.version) > 0.5)
                     == passengers.y_test).mean()
        what = "MAE" if name == "MPG" else "accuracy"
        print(f"{name:<8} version {export.version}: {what} {score:.3f}")"""),
    md("""
The compare view: which version errs less, and the examples where the two disagree most (the
largest difference, for the regression):
"""),
    code("""
%tfserve compare Text reviews.x_test reviews.y_test --a {text_v1.version} --b {text_v2.version} -n 200"""),
    code("%tfserve compare MPG cars.x_test cars.y_test --a {mpg_v1.version} --b {mpg_v2.version}"),
    code("""
%tfserve compare Titanic x_test passengers.y_test --a {titanic_v1.version} --b {titanic_v2.version}"""),
    code("%tfserve stop Beyond"),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_custom_models.ipynb": CUSTOM,
    "03_versions.ipynb": VERSIONS,
    "04_draw_digit.ipynb": DRAW,
    "05_any_client.ipynb": ANY_CLIENT,
    "06_beyond_images.ipynb": BEYOND,
}


def build(cells) -> nbformat.NotebookNode:
    """A notebook with stable cell ids (so regenerating gives the same file)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        },
        "language_info": {"name": "python"},
    }
    for index, (kind, source) in enumerate(cells):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
        cell.id = f"c{index:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(cells) -> str:
    return nbformat.writes(build(cells)) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = HERE / name
        text = render(cells)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python notebooks/build_notebooks.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
