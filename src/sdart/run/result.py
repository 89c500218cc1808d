"""What a run gives back: each batch as it is decoded, and the whole run's result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from sdart.images.output import png_bytes, save_image
from sdart.request import GenerationRequest


@dataclass
class Batch:
    """The images of one pipeline call (`batch_size` images, consecutive seeds)."""

    iteration: int
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    nsfw: list[bool] | None
    timings: dict[str, float]


@dataclass
class GenerationResult:
    request: GenerationRequest  # resolved: the seed, width and height actually used
    images: list[Image.Image] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    nsfw: list[bool] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False
    # What the request asked for and the run did not apply (a LoRA tag naming no file with missing_lora="warn", …)
    warnings: list[str] = field(default_factory=list)

    def add(self, batch: Batch) -> None:
        self.images += batch.images
        self.seeds += batch.seeds
        self.infotexts += batch.infotexts
        if batch.nsfw is not None:
            self.nsfw = (self.nsfw or []) + batch.nsfw

    def save(self, directory: str | Path | None = None) -> list[Path]:
        """Write the images as PNGs with their `parameters` chunk; existing files are never overwritten."""
        return [save_image(image, text, seed, directory or "outputs") for image, text, seed in
                zip(self.images, self.infotexts, self.seeds)]

    def grid(self, columns: int | None = None) -> Image.Image:
        """All images tiled in one picture (for notebooks and previews)."""
        if not self.images:
            raise ValueError("no images to show (the run was cancelled before the first batch finished)")
        columns = columns or math.ceil(math.sqrt(len(self.images)))
        rows = math.ceil(len(self.images) / columns)
        w, h = self.images[0].size
        sheet = Image.new("RGB", (columns * w, rows * h), "white")
        for i, image in enumerate(self.images):
            sheet.paste(image, ((i % columns) * w, (i // columns) * h))
        return sheet

    def _repr_png_(self) -> bytes | None:  # Jupyter shows the result inline
        if not self.images:
            return None
        return png_bytes(self.grid())


def summarise_timings(batches: list[dict[str, float]], images: int, load_s: float) -> dict[str, float]:
    """Run timings: totals summed over batches, per-step and fixed costs averaged."""
    timings = {"load_s": load_s, "total_s": sum(b["total_s"] for b in batches)}
    if batches:
        for key in ("step_s", "it_per_s", "fixed_s"):
            timings[key] = sum(b[key] for b in batches) / len(batches)
        timings["per_image_s"] = timings["total_s"] / images
    return {key: round(value, 4) for key, value in timings.items()}
