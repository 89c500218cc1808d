"""Old path of sdart.sampling, kept for code written against it."""

from sdart.sampling import sampler_names  # noqa: F401
