"""Inference: decoding untrusted image bytes, the Keras and LiteRT runtimes, batching, and loading the configured
classifier once per process. Only classify_image (and the embedded runner) import this package."""
