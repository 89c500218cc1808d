"""Upscalers: A1111's pixel upscalers (None, Lanczos, Nearest) and upscaler models (ESRGAN, Real-ESRGAN, SwinIR,
HAT, DAT, SPAN and the other architectures spandrel detects), found by name in the upscalers folder and run in
blended tiles.

    from sdart.upscalers.pixel import upscale
    bigger = upscale(image, "4x-UltraSharp", 4, folder="models/ESRGAN")

Modules: names (A1111's names and latent modes), files (the folder, loading with spandrel), arches (importing
spandrel where torchvision cannot load), tiles (tiled runs), pixel (`upscale`), extras (A1111's postprocessing
step and its infotext, for `sdart upscale` and /sdapi/v1/extra-*-image).
"""
