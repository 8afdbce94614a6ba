"""jaxlens: distil language models in JAX, at the output and through the logit lens."""

__version__ = "0.1.0"
