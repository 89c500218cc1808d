"""Old path of sdart.images.infotext, kept for code written against it."""

from sdart.images.infotext import format_infotext, parse_infotext, read_infotext  # noqa: F401
