"""The TensorFlow-free side: LiteRT runner (`runner`) and input loading (`inputs`).

Nothing here reaches TensorFlow-side code (tests/unit/test_layering.py checks it), so
`pip install kdq_tf` without the `train` extra can classify on a device.
"""
