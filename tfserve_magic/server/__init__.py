"""The TensorFlow-Serving-compatible model server process (``python -m tfserve_magic serve``).

Imports TensorFlow, never IPython or Keras. See docs/design.md for the threading model.
"""
