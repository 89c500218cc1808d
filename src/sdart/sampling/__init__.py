"""A1111 sampler names and schedule types → diffusers schedulers."""

from sdart.sampling.samplers import sampler_names  # noqa: F401 - the listing users call (README, notebook)
