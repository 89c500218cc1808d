"""Old path of sdart.images.preview, kept for code written against it."""

from sdart.images.preview import latent_preview  # noqa: F401
