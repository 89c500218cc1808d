"""After decoding: inpainting's compositing through the mask, and the (opt-in) safety check that flags, never
blackens."""

from __future__ import annotations

from PIL import Image


def composite_through_mask(images: list[Image.Image], init: Image.Image, mask: Image.Image) -> list[Image.Image]:
    """As A1111: outside the (blurred) mask the picture stays as it was, pixel for pixel."""
    return [Image.composite(image, init, mask) for image in images]


def check_safety(checker, extractor, images: list[Image.Image]) -> list[bool]:
    """The model's safety checker's verdict per image (False for all when the model ships none)."""
    import numpy as np

    if checker is None or extractor is None:
        return [False] * len(images)
    checker_device = next(checker.parameters()).device
    clip_input = extractor(images, return_tensors="pt").pixel_values.to(checker_device, checker.dtype)
    arrays = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])
    _, flagged = checker(images=arrays.copy(), clip_input=clip_input)
    return [bool(f) for f in flagged]
