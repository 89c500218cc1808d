"""Procedural "shapes" data: one flat shape on a plain background, its captions, and a pixel-level checker.

The generator knows the truth, so the checker can grade any 64×64 image (ours or a model's) by
colour, shape and background without a learned classifier:

* background = the palette colour most pixels of the outer ring snap to;
* foreground = pixels far from the background colour (largest connected blob);
* colour = palette colour nearest to the median of the blob's interior;
* shape = nearest prototype by (fill of the bounding box, widths at 1/6, 1/2, 5/6 of its height).

Everything is deterministic from a seed (numpy ``Generator``); nothing here imports torch.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

IMAGE_SIZE = 64
_SUPERSAMPLE = 4  # draw at 4× and downsample: anti-aliased edges like a real picture

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 30),
    "green": (20, 160, 40),
    "blue": (30, 70, 230),
    "yellow": (250, 220, 20),
    "orange": (250, 140, 0),
    "purple": (130, 40, 180),
    "pink": (250, 120, 200),
    "cyan": (0, 200, 220),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Bounding-box side in px. The smallest is 4.5 latent pixels (the VAE downsamples 4×): below that a triangle or a
# diamond comes back from the VAE as a round blob.
SIZES: dict[str, tuple[int, int]] = {"small": (18, 24), "medium": (26, 34), "large": (36, 46)}
# 3×3 regions of the canvas, by the shape's centre.
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "in the top left corner", (0, 1): "at the top", (0, 2): "in the top right corner",
    (1, 0): "on the left", (1, 1): "in the center", (1, 2): "on the right",
    (2, 0): "in the bottom left corner", (2, 1): "at the bottom", (2, 2): "in the bottom right corner",
}

# Caption templates. {size} is "small "/"large "/"" (medium is not named), {pos} a phrase from POSITIONS.
TEMPLATES: tuple[str, ...] = (
    "a {color} {shape} on a {bg} background",
    "a {size}{color} {shape}, {bg} background",
    "{color} {shape} {pos} on {bg}",
    "a {size}{color} {shape} {pos}, on a {bg} background",
    "a {color} {shape} against a {bg} background",
    "{bg} background with a {size}{color} {shape}",
    "a picture of a {color} {shape} on {bg}",
    "a {size}{color} {shape} on {bg}",
)
EVAL_TEMPLATE = TEMPLATES[0]

HELD_OUT_SEED = 1234
N_HELD_OUT = 36  # 10 % of the 10 × 4 × 9 = 360 colour × shape × background combinations


@dataclass(frozen=True)
class Combo:
    color: str
    shape: str
    bg: str

    def prompt(self) -> str:
        return fix_articles(EVAL_TEMPLATE.format(color=self.color, shape=self.shape, bg=self.bg))


@dataclass(frozen=True)
class Sample:
    """One drawn picture and what is true about it."""

    color: str
    shape: str
    bg: str
    size: str       # small / medium / large
    side: int       # bbox side in px
    cx: float       # centre, px
    cy: float
    position: str   # phrase from POSITIONS
    caption: str

    @property
    def combo(self) -> Combo:
        return Combo(self.color, self.shape, self.bg)


def fix_articles(text: str) -> str:
    """'a orange' -> 'an orange'."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def all_combos() -> list[Combo]:
    return [Combo(c, s, b) for c in COLORS for s in SHAPES for b in COLORS if b != c]


def held_out_combos() -> list[Combo]:
    """A fixed 10 % of combinations that training never sees (each colour, shape and background still does)."""
    combos = all_combos()
    rng = random.Random(HELD_OUT_SEED)
    picked = sorted(rng.sample(range(len(combos)), N_HELD_OUT))
    return [combos[i] for i in picked]


def train_combos() -> list[Combo]:
    held = set(held_out_combos())
    return [c for c in all_combos() if c not in held]


def caption_vocabulary() -> list[str]:
    """Every word any template can produce (the tokenizer makes each one a single token)."""
    words: set[str] = set(COLORS) | set(SHAPES) | {"small", "large", "an"}
    for t in TEMPLATES:
        words |= set(t.replace("{size}", "").replace(",", " ").split())
    for p in POSITIONS.values():
        words |= set(p.split())
    return sorted(w for w in words if not w.startswith("{"))


# ---------------------------------------------------------------- drawing

def _polygon(shape: str, x0: float, y0: float, side: float) -> list[tuple[float, float]] | None:
    x1, y1, cx, cy = x0 + side, y0 + side, x0 + side / 2, y0 + side / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    return None


def draw(color: str, shape: str, bg: str, side: float, cx: float, cy: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 picture of one shape whose bounding box is `side` px, centred at (cx, cy)."""
    k = _SUPERSAMPLE
    img = Image.new("RGB", (size * k, size * k), COLORS[bg])
    d = ImageDraw.Draw(img)
    x0, y0, s = (cx - side / 2) * k, (cy - side / 2) * k, side * k
    fill = COLORS[color]
    if shape == "circle":
        d.ellipse([x0, y0, x0 + s - 1, y0 + s - 1], fill=fill)
    elif shape == "square":
        d.rectangle([x0, y0, x0 + s - 1, y0 + s - 1], fill=fill)
    else:
        d.polygon(_polygon(shape, x0, y0, s), fill=fill)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX))


def _position_phrase(cx: float, cy: float, size: int = IMAGE_SIZE) -> str:
    col = min(int(cx * 3 / size), 2)
    row = min(int(cy * 3 / size), 2)
    return POSITIONS[(row, col)]


def make_sample(rng: np.random.Generator, combo: Combo, size: int = IMAGE_SIZE) -> tuple[np.ndarray, Sample]:
    size_name = ("small", "medium", "large")[rng.integers(3)]
    lo, hi = SIZES[size_name]
    side = int(rng.integers(lo, hi + 1))
    margin = 2 + side / 2
    cx = float(rng.uniform(margin, size - margin))
    cy = float(rng.uniform(margin, size - margin))
    pos = _position_phrase(cx, cy, size)
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    size_word = "" if size_name == "medium" else size_name + " "
    caption = fix_articles(template.format(color=combo.color, shape=combo.shape, bg=combo.bg, size=size_word, pos=pos))
    image = draw(combo.color, combo.shape, combo.bg, side, cx, cy, size)
    return image, Sample(combo.color, combo.shape, combo.bg, size_name, side, cx, cy, pos, caption)


def make_dataset(n: int, seed: int, combos: Iterable[Combo] | None = None) -> tuple[np.ndarray, list[Sample]]:
    """`n` pictures (n, 64, 64, 3) uint8 drawn from `combos` (default: the training split), deterministic in `seed`."""
    pool = list(train_combos() if combos is None else combos)
    rng = np.random.default_rng(seed)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    samples: list[Sample] = []
    for i in range(n):
        images[i], s = make_sample(rng, pool[rng.integers(len(pool))])
        samples.append(s)
    return images, samples


# ---------------------------------------------------------------- checker

_PALETTE_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[n] for n in _PALETTE_NAMES], dtype=np.float32)  # (K, 3)


def nearest_color(rgb: np.ndarray) -> np.ndarray:
    """Palette index nearest (RGB Euclidean) to each colour in `rgb` (..., 3)."""
    d = ((rgb[..., None, :].astype(np.float32) - _PALETTE) ** 2).sum(-1)
    return d.argmin(-1)


def _shape_prototypes() -> dict[str, np.ndarray]:
    protos = {}
    for shape in SHAPES:
        img = draw("white", shape, "black", 40, 32, 32)
        protos[shape] = _shape_features(img[..., 0] > 127)
    return protos


def _shape_features(mask: np.ndarray) -> np.ndarray:
    """(fill of bbox, aspect, width at 1/6, 1/2, 5/6 of the height / max width) of a boolean mask."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = mask[y0:y1, x0:x1]
    h, w = box.shape
    widths = box.sum(1).astype(np.float32)
    wmax = max(widths.max(), 1.0)

    def width_at(frac: float) -> float:
        r = min(int(frac * h), h - 1)
        return float(widths[max(r - 1, 0): r + 2].mean() / wmax)

    return np.array([box.mean(), w / h, width_at(1 / 6), width_at(1 / 2), width_at(5 / 6)], dtype=np.float32)


_PROTOTYPES: dict[str, np.ndarray] | None = None
MIN_SHAPE_PIXELS = 40  # a blob smaller than this is "no shape"


def analyze_image(image: np.ndarray | Image.Image) -> dict:
    """Read colour, shape and background off a picture: {"color", "shape", "bg", "area", "features"}."""
    global _PROTOTYPES
    if _PROTOTYPES is None:
        _PROTOTYPES = _shape_prototypes()
    img = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if img.dtype != np.uint8:  # float in [0, 1] from a pipeline with output_type="np"
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    f = img.astype(np.float32)
    ring = np.concatenate([f[:2].reshape(-1, 3), f[-2:].reshape(-1, 3), f[:, :2].reshape(-1, 3), f[:, -2:].reshape(-1, 3)])
    ring_labels = nearest_color(ring)
    bg_idx = int(np.bincount(ring_labels, minlength=len(_PALETTE)).argmax())
    bg_rgb = np.median(ring[ring_labels == bg_idx], axis=0)
    # Foreground: clearly away from the measured background colour.
    dist = np.sqrt(((f - bg_rgb) ** 2).sum(-1))
    mask = dist > 60
    labels, n = ndimage.label(mask)
    result = {"bg": _PALETTE_NAMES[bg_idx], "color": None, "shape": None, "area": 0, "features": None}
    if n == 0:
        return result
    sizes = ndimage.sum_labels(mask, labels, index=range(1, n + 1))
    blob = labels == (int(np.argmax(sizes)) + 1)
    blob = ndimage.binary_fill_holes(blob)
    area = int(blob.sum())
    result["area"] = area
    if area < MIN_SHAPE_PIXELS:
        return result
    core = ndimage.binary_erosion(blob, iterations=1)
    pix = f[core] if core.sum() >= 10 else f[blob]
    result["color"] = _PALETTE_NAMES[int(nearest_color(np.median(pix, axis=0)))]
    feats = _shape_features(blob)
    result["features"] = [round(float(x), 3) for x in feats]
    result["shape"] = min(_PROTOTYPES, key=lambda s: float(((feats - _PROTOTYPES[s]) ** 2).sum()))
    return result


def check_image(image: np.ndarray | Image.Image, expected: Combo | Sample | dict) -> dict:
    """Grade a picture against what the prompt asked for.

    Returns {"color_ok", "shape_ok", "bg_ok", "all_ok", "found": analyze_image(...), "expected": {...}}.
    """
    if isinstance(expected, (Combo, Sample)):
        exp = {"color": expected.color, "shape": expected.shape, "bg": expected.bg}
    else:
        exp = {k: expected[k] for k in ("color", "shape", "bg")}
    found = analyze_image(image)
    ok = {f"{k}_ok": found[k] == exp[k] for k in ("color", "shape", "bg")}
    return {**ok, "all_ok": all(ok.values()), "found": found, "expected": exp}


def sample_dict(s: Sample) -> dict:
    return asdict(s)
