"""The URL of a local server through the notebook server's proxy (tfserve_magic/proxy_url.py),
over the environments JupyterHub, Binder, a plain Jupyter Server and a deployment set, and in
``%%predict --show curl``'s snippet."""

from __future__ import annotations

import pytest

from tfserve_magic import proxy_url
from tfserve_magic.predict_view import request_snippet

PATH = "/v1/models/half"


@pytest.mark.parametrize("env, installed, expected", [
    # nothing known: no proxy URL
    ({}, True, None),
    # JupyterHub with a public URL configured (JupyterHub sets the server's public URL)
    ({"JUPYTERHUB_PUBLIC_URL": "https://hub.example.org/user/ada/",
      "JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}, True,
     "https://hub.example.org/user/ada/proxy/8501/v1/models/half"),
    # JupyterHub with subdomains: the host and the prefix
    ({"JUPYTERHUB_HOST": "https://ada.hub.example.org", "JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"},
     True, "https://ada.hub.example.org/user/ada/proxy/8501/v1/models/half"),
    # Binder / a hub without a known address: the path, to put after the hub's address
    ({"JUPYTERHUB_HOST": "", "JUPYTERHUB_SERVICE_PREFIX": "/user/org-repo-abc123/",
      "BINDER_LAUNCH_HOST": "https://mybinder.org/"}, True,
     "/user/org-repo-abc123/proxy/8501/v1/models/half"),
    # a plain Jupyter Server on another machine
    ({"JUPYTER_SERVER_URL": "http://gpu-box:8888/"}, True,
     "http://gpu-box:8888/proxy/8501/v1/models/half"),
    ({"JUPYTER_SERVER_URL": "http://gpu-box:8888/lab-base"}, True,
     "http://gpu-box:8888/lab-base/proxy/8501/v1/models/half"),
    # the hub's prefix wins over the notebook server's own (internal) URL
    ({"JUPYTERHUB_SERVICE_PREFIX": "/user/ada/", "JUPYTER_SERVER_URL": "http://10.0.0.5:8888/"},
     True, "/user/ada/proxy/8501/v1/models/half"),
    # without jupyter-server-proxy the notebook server proxies nothing
    ({"JUPYTERHUB_SERVICE_PREFIX": "/user/ada/", "JUPYTER_SERVER_URL": "http://x:8888/"}, False,
     None),
    # a deployment's template wins, and is used even where the proxy is not importable here
    ({proxy_url.TEMPLATE_ENV: "https://lab.example.org/me/proxy/%PORT%/",
      "JUPYTERHUB_PUBLIC_URL": "https://other/"}, False,
     "https://lab.example.org/me/proxy/8501/v1/models/half"),
    ({proxy_url.TEMPLATE_ENV: "https://lab.example.org/me"}, False,
     "https://lab.example.org/me/proxy/8501/v1/models/half"),
])
def test_the_proxy_url_rule(env, installed, expected):
    assert proxy_url.proxied_url(8501, PATH, env, installed) == expected


def test_paths_join_with_one_slash():
    env = {"JUPYTERHUB_PUBLIC_URL": "https://hub/user/ada"}
    assert proxy_url.proxied_url(9000, "v1/models/m", env, True) == (
        "https://hub/user/ada/proxy/9000/v1/models/m")
    assert proxy_url.proxied_url(9000, "", env, True) == "https://hub/user/ada/proxy/9000"


def test_only_a_server_on_this_machine_is_proxied():
    env = {"JUPYTERHUB_PUBLIC_URL": "https://hub/user/ada/"}
    assert proxy_url.proxied_for("http://127.0.0.1:8501/v1/models/m:predict", env, True) == (
        "https://hub/user/ada/proxy/8501/v1/models/m:predict")
    assert proxy_url.proxied_for("http://[::1]:8501/v1/models/m", env, True) == (
        "https://hub/user/ada/proxy/8501/v1/models/m")
    assert proxy_url.proxied_for("http://10.1.2.3:8501/v1/models/m", env, True) is None
    assert proxy_url.proxied_for("http://127.0.0.1/v1/models/m", env, True) is None  # no port
    assert proxy_url.proxied_for("not a url", env, True) is None


def test_proxy_installed_looks_at_this_environment():
    import importlib.util

    assert proxy_url.proxy_installed() == (
        importlib.util.find_spec("jupyter_server_proxy") is not None)


def test_the_curl_snippet_gives_the_proxied_url(monkeypatch, tmp_path):
    url = "http://127.0.0.1:8501/v1/models/half:predict"
    body = {"instances": [1.0, 2.0]}
    for name in ("JUPYTERHUB_PUBLIC_URL", "JUPYTERHUB_SERVICE_PREFIX", "JUPYTER_SERVER_URL",
                 proxy_url.TEMPLATE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(proxy_url, "proxy_installed", lambda: False)
    plain = request_snippet("curl", url, body, body_dir=tmp_path).code
    assert "proxy" not in plain and plain.startswith("curl -sS -X POST ")

    monkeypatch.setattr(proxy_url, "proxy_installed", lambda: True)
    monkeypatch.setenv("JUPYTERHUB_PUBLIC_URL", "https://hub.example.org/user/ada/")
    code = request_snippet("curl", url, body, body_dir=tmp_path).code
    assert code == (
        "# From your own computer, through the notebook server (jupyter-server-proxy), use\n"
        "#   https://hub.example.org/user/ada/proxy/8501/v1/models/half:predict\n"
        '# with your Jupyter token: -H "Authorization: token $JUPYTER_TOKEN"\n' + plain
    )
    monkeypatch.delenv("JUPYTERHUB_PUBLIC_URL")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    code = request_snippet("curl", url, body, body_dir=tmp_path).code
    assert "#   /user/ada/proxy/8501/v1/models/half:predict (after your hub's address)\n" in code
    # the Python and Node snippets stay as they were (they run where the kernel runs)
    assert "proxy" not in request_snippet("python", url, body, body_dir=tmp_path).code
