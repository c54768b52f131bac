"""Builds the optional compiled half of the REST decoder's SIMD tier (docs/codec.md).

Everything else about the package is in pyproject.toml. The extension
(tfserve_magic/server/_simdnest.cpp) is compiled with the copy of simdjson that the pysimdjson
wheel carries (a build requirement), so nothing is vendored here. It is optional: without a
C++17 compiler, or without pysimdjson at build time, the install goes on and
server/simd_decode.py decodes with pysimdjson alone (slower, same answers).
"""

import importlib.util
import os
import sys

from setuptools import Extension, setup


def _simdjson_dir():
    """pysimdjson's package folder, which holds simdjson.h and simdjson.cpp, or None."""
    spec = importlib.util.find_spec("simdjson")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isfile(os.path.join(folder, "simdjson.cpp")):
            return folder
    return None


def _extensions():
    if os.environ.get("TFSERVE_MAGIC_NO_EXTENSION") == "1":
        return []
    folder = _simdjson_dir()
    if folder is None:
        print("tfserve_magic: pysimdjson's simdjson sources not found; "
              "the compiled decoder is skipped", file=sys.stderr)
        return []
    if sys.platform == "win32":
        flags = ["/O2", "/std:c++17", "/EHsc"]
    else:
        flags = ["-O2", "-std=c++17", "-DNDEBUG", "-fvisibility=hidden"]
    return [
        Extension(
            "tfserve_magic.server._simdnest",
            sources=["tfserve_magic/server/_simdnest.cpp", os.path.join(folder, "simdjson.cpp")],
            include_dirs=[folder],
            language="c++",
            extra_compile_args=flags,
            optional=True,  # a failed build leaves the pure-Python tiers, not a failed install
        )
    ]


setup(ext_modules=_extensions())
