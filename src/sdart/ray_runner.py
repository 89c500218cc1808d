"""Old path of sdart.server.ray (Serve config files name `sdart.ray_runner:app_builder`), kept for them."""

from sdart.server.ray import ServeScale, app_builder, serve_on_ray  # noqa: F401
