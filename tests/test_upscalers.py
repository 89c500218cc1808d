"""Upscaler models: spandrel detects each architecture from a saved state dict, runs it at the right size, the
same in tiles as whole; files that are not upscalers are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdart.upscalers.files import UpscalerError, choose_dtype, load_upscaler, read_model
from sdart.upscalers.pixel import run_model, tile_alignment, upscale, upscale_with_model
from sdart.upscalers.tiles import run_tiled, tile_layout
from sdart.upscalers.tiny import TINY_ARCHITECTURES, TINY_SCALES, save_tiny_upscaler, tiny_upscaler

# Tiled against whole, on float outputs in [0, 1]: under one 8-bit level anywhere, seams included. The tiny
# networks see up to ~18 px around each output pixel (SPAN: 18 convolutions); 16 px of overlap, with a tile's
# outer quarter of it weighted 0, covers that.
# Measured on these networks: at most 0.19 of a level (DAT), 0.003 (ESRGAN); with 12 px of overlap SPAN is off
# by 2.9 levels (it sees farther than 12 − 3 px), the others stay under 0.2.
ONE_LEVEL = 1 / 255
TILE, OVERLAP = 32, 16


def picture(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Gradients with noise: detail everywhere, so a seam would show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1)
    pixels = np.clip(base * 200 + rng.normal(0, 25, base.shape), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """One file per tiny architecture, as A1111 keeps them: ESRGAN/ and DAT/ subfolders, .pth and .safetensors."""
    root = tmp_path_factory.mktemp("upscalers")
    for architecture in TINY_ARCHITECTURES:
        folder = "DAT" if architecture == "DAT" else "ESRGAN"
        suffix = ".safetensors" if architecture in ("SwinIR", "SPAN") else ".pth"
        save_tiny_upscaler(root / folder / f"{TINY_SCALES[architecture]}x-tiny-{architecture}{suffix}", architecture)
    return root


@pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)
def test_each_architecture_is_detected_and_upscales_as_its_network_does(model_dir, architecture):
    scale = TINY_SCALES[architecture]
    name = f"{scale}x-tiny-{architecture}"
    path = next(model_dir.rglob(f"{name}.*"))
    descriptor = read_model(path)
    assert (descriptor.architecture.id, descriptor.scale) == (architecture, scale)

    image = picture()
    out = upscale(image, name, scale, folder=model_dir, tile=0, device="cpu", dtype="float32")
    assert out.size == (64 * scale, 48 * scale)
    # The weights were loaded into the right places: the output is the network's own forward pass.
    with torch.inference_mode():
        expected = tiny_upscaler(architecture)(as_tensor(image)).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(np.asarray(out).astype(float) - expected).max() <= 0.5 + 1e-3  # rounding to 8 bits only


def seam_lines(spans: list[tuple[int, int]], scale: int) -> list[int]:
    """Output rows (or columns) where one tile begins or ends inside the picture."""
    return sorted({start * scale for start, _ in spans[1:]} | {(start + size) * scale - 1 for start, size in spans[:-1]})


@pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)
def test_tiled_equals_whole_within_one_level_and_shows_no_seam(model_dir, architecture):
    scale = TINY_SCALES[architecture]
    descriptor = load_upscaler(next(model_dir.rglob(f"*-{architecture}.*")), torch.device("cpu"), "float32")
    image = as_tensor(picture())  # (1, 3, 48, 64)
    calls = []

    def counted(tile: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(tile.shape[2:]))
        return descriptor(tile)

    align = tile_alignment(descriptor)  # the tiny transformers' windows: 4 px
    assert align == (4 if architecture in ("SwinIR", "HAT", "DAT") else 1)
    with torch.inference_mode():
        whole = descriptor(image).float()
        tiled = run_tiled(counted, image, scale, TILE, OVERLAP, 3, align)
    ys, xs = tile_layout(48, TILE, OVERLAP, align), tile_layout(64, TILE, OVERLAP, align)
    assert len(calls) == len(ys) * len(xs) == 6 and max(max(shape) for shape in calls) <= TILE

    difference = (tiled - whole).abs()[0].amax(dim=0)  # (H·s, W·s), worst channel
    rows, cols = seam_lines(ys, scale), seam_lines(xs, scale)
    worst_on_seams = max(difference[rows, :].max().item(), difference[:, cols].max().item())
    assert worst_on_seams < ONE_LEVEL, f"seam differs by {worst_on_seams * 255:.2f} levels"
    assert difference.max().item() < ONE_LEVEL
    # no visible seam: the step between neighbouring pixels across a seam is the whole picture's step
    step_tiled = (tiled[..., cols] - tiled[..., [c - 1 for c in cols]]).abs()
    step_whole = (whole[..., cols] - whole[..., [c - 1 for c in cols]]).abs()
    assert (step_tiled - step_whole).abs().max().item() < 2 * ONE_LEVEL


def test_tiles_cover_the_axis_overlapping_by_the_overlap_and_no_more():
    for length, tile, overlap, align in ((47, 48, 16, 1), (49, 48, 16, 1), (100, 48, 16, 1), (993, 512, 32, 1),
                                         (1024, 512, 32, 1), (2048, 512, 32, 8), (256, 128, 32, 1), (300, 128, 0, 1),
                                         (1000, 512, 32, 16), (64, 32, 12, 4)):
        spans = tile_layout(length, tile, overlap, align)
        assert spans[0][0] == 0 and sum(spans[-1]) == length  # covered end to end
        assert all(size <= tile and start % align == 0 for start, size in spans)
        overlaps = [a + size - b for (a, size), (b, _) in zip(spans, spans[1:])]
        assert all(overlap <= o < overlap + 2 * align for o in overlaps), (length, spans)
        assert len(spans) == 1 or len(spans) == -(-(length - overlap) // (tile - overlap))  # the fewest that fit
    assert tile_layout(1024, 512, 32) == [(0, 363), (330, 363), (661, 363)]  # 3 tiles of 363 px, not 3 of 512


def test_blending_puts_every_tile_back_in_its_place():
    """A model that works pixel by pixel gives exactly the same picture in any tiling: the weights of every
    output pixel add up to one and each tile lands where it came from."""
    image = torch.rand(1, 3, 70, 131)

    def pointwise_2x(x: torch.Tensor) -> torch.Tensor:  # 2× nearest of a per-pixel function
        return (x * 0.7 + 0.1).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    for tile, overlap in ((32, 8), (50, 0), (64, 31), (16, 7)):
        assert torch.allclose(run_tiled(pointwise_2x, image, 2, tile, overlap, 3), pointwise_2x(image), atol=1e-6)


def test_an_upscaler_over_the_target_is_scaled_down_and_under_it_runs_again(model_dir):
    """A1111's Upscaler.upscale: a 4× model asked for 2× runs once, then Lanczos; a 2× model asked for 4× twice."""
    image = picture(24, 20)
    four = load_upscaler(next(model_dir.rglob("4x-tiny-ESRGAN.*")), torch.device("cpu"), "float32")
    once = run_model(image, four, tile=0)
    assert upscale_with_model(image, four, (48, 40), tile=0) == once.resize((48, 40), Image.Resampling.LANCZOS)

    two = load_upscaler(next(model_dir.rglob("2x-tiny-SPAN.*")), torch.device("cpu"), "float32")
    assert upscale_with_model(image, two, (96, 80), tile=0) == run_model(run_model(image, two, tile=0), two, tile=0)


def test_a_file_that_is_not_an_upscaler_is_refused_by_its_name(tmp_path):
    from safetensors.torch import save_file

    notes = tmp_path / "ESRGAN" / "notes.pth"
    notes.parent.mkdir()
    notes.write_text("not a model")
    other = tmp_path / "ESRGAN" / "classifier.safetensors"
    save_file(torch.nn.Linear(4, 2).state_dict(), str(other))

    with pytest.raises(UpscalerError, match=r"notes\.pth: not a model file spandrel can read"):
        upscale(picture(), "notes", 2, folder=tmp_path)
    with pytest.raises(UpscalerError, match=r"classifier\.safetensors: not an upscaler model"):
        upscale(picture(), "classifier", 2, folder=tmp_path)


def test_a_wrong_name_lists_what_there_is(model_dir):
    with pytest.raises(UpscalerError, match=r"upscaler 'R-ESRGAN 4x\+'.*available: None, Lanczos, Nearest, "
                                            r"2x-tiny-DAT, 2x-tiny-HAT"):
        upscale(picture(), "R-ESRGAN 4x+", 4, folder=model_dir)
    with pytest.raises(UpscalerError, match="no upscalers folder is set"):
        upscale(picture(), "4x-tiny-ESRGAN", 4)
    with pytest.raises(UpscalerError, match="a latent mode works on latents"):
        upscale(picture(), "Latent (bicubic)", 2, folder=model_dir)


@pytest.mark.parametrize(("name", "resample"), [("None", Image.Resampling.LANCZOS),
                                                ("Lanczos", Image.Resampling.LANCZOS),
                                                ("Nearest", Image.Resampling.NEAREST)])
def test_the_pixel_upscalers_are_pil_resizes(name, resample):
    image = picture(30, 20)
    assert upscale(image, name, 2.5) == image.resize((75, 50), resample)  # A1111: int(side × scale)
    assert upscale(image, name, size=(64, 40)).size == (64, 40)


def test_built_in_names_match_in_any_case_as_hires_fix_takes_them():
    image = picture(30, 20)
    assert upscale(image, "lanczos", 2) == upscale(image, "Lanczos", 2)
    assert upscale(image, " NEAREST", 2) == image.resize((60, 40), Image.Resampling.NEAREST)


def test_two_models_used_in_turn_are_each_read_once(model_dir, monkeypatch):
    """The extras tab's upscaler_1 and upscaler_2 alternate picture after picture: both stay loaded."""
    from sdart.upscalers import files

    files._load_cached.cache_clear()
    reads = []
    monkeypatch.setattr(files, "read_model", lambda path, _read=files.read_model: reads.append(path) or _read(path))
    first, second = "4x-tiny-Compact", "2x-tiny-SPAN"
    for _ in range(2):
        for name in (first, second):
            upscale(picture(16, 16), name, 2, folder=model_dir, tile=0, dtype="float32")
    assert sorted(path.stem for path in reads) == sorted([first, second])


def test_bad_sizes_and_tiles_name_the_value():
    with pytest.raises(ValueError, match="scale = 1000: gives a 30000×20000 picture"):
        upscale(picture(30, 20), "Lanczos", 1000)
    with pytest.raises(ValueError, match="overlap = 32: must be under half the tile"):
        upscale(picture(30, 20), "Lanczos", 2, tile=64, overlap=32)


def test_precision_follows_what_the_architecture_allows(model_dir, monkeypatch):
    import sdart.speed.device as device_module

    swinir = read_model(next(model_dir.rglob("*-SwinIR.*")))  # spandrel: no float16, bfloat16 fine
    esrgan = read_model(next(model_dir.rglob("*-ESRGAN.*")))
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_module, "pick_dtype", lambda requested, device: torch.float16)  # a GPU's choice
    assert choose_dtype(esrgan, cpu) == torch.float16
    assert choose_dtype(swinir, cpu) == torch.float32  # no float16; bfloat16 only on CUDA that has it
    monkeypatch.setattr(device_module, "pick_dtype", lambda requested, device: torch.bfloat16)  # an AMX CPU's
    assert choose_dtype(swinir, cpu) == torch.bfloat16
    with pytest.raises(UpscalerError, match="dtype = 'float16'.*SwinIR model, which does not run in float16"):
        monkeypatch.setattr(device_module, "pick_dtype", lambda requested, device: torch.float16)
        choose_dtype(swinir, cpu, "float16")


def test_bfloat16_runs_close_to_float32(model_dir):
    path = next(model_dir.rglob("*-ESRGAN.*"))
    fast = load_upscaler(path, torch.device("cpu"), "bfloat16")
    assert fast.dtype == torch.bfloat16
    image = picture(32, 24)
    reduced = np.asarray(run_model(image, fast, tile=0)).astype(int)
    full = np.asarray(run_model(image, load_upscaler(path, torch.device("cpu"), "float32"), tile=0)).astype(int)
    assert np.abs(reduced - full).mean() < 1.0 and np.abs(reduced - full).max() <= 8  # bf16: 8 bits of mantissa


def test_out_of_memory_halves_the_tile_down_to_128():
    """ComfyUI's rule: on out-of-memory, try again with half the tile; give up under 128 px."""
    from sdart.upscalers.tiles import run_tiled_within_memory

    image = torch.rand(1, 3, 300, 300)
    seen: list[int] = []

    def fits_128(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[2])
        if x.shape[2] > 128:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    out = run_tiled_within_memory(fits_128, image, 2, 512, 32, 3)
    # 512 px: the whole picture at once; then tiles of at most 256 (166 px: two cover 300); then at most 128
    assert seen[0] == 300 and 128 < seen[1] <= 256 and seen[2:] and max(seen[2:]) <= 128
    assert torch.allclose(out, image.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3), atol=1e-6)

    def never_fits(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    with pytest.raises(MemoryError, match="out of memory upscaling a 300×300 picture even in 128 px tiles"):
        run_tiled_within_memory(never_fits, image, 2, 512, 32, 3)


def test_spandrel_has_every_architecture_that_imports_here_in_its_own_order():
    """Imported whole where torchvision loads; otherwise its architectures one by one (sdart.upscalers.arches)."""
    from pathlib import Path

    from sdart.upscalers.arches import registry_entries, spandrel, unavailable_architectures, unavailable_note

    library = spandrel()
    missing = unavailable_architectures()
    entries = registry_entries(Path(library.__file__).parent / "__helpers" / "main_registry.py")
    loaded = [support.architecture.id for support in library.MAIN_REGISTRY.architectures("insertion")]
    assert loaded == [module for module, _, _ in entries if module not in missing]
    assert len(loaded) >= 40 and set(TINY_ARCHITECTURES) <= set(loaded)
    assert set(missing) <= {"RestoreFormer", "LaMa"}  # the two that import torchvision
    if missing:
        assert all("torchvision" in reason for reason in missing.values())
        assert "cannot load here" in unavailable_note() and "torchvision" in unavailable_note()
    assert library.ModelLoader().registry is library.MAIN_REGISTRY


@pytest.mark.parametrize(("engine_dtype", "expected"), [
    ("float32", "float32"), ("bfloat16", "auto"), ("float16", "auto"), ("auto", "auto")])
def test_a_generating_process_hands_its_upscalers_float32_but_never_forces_half(engine_dtype, expected, tmp_path):
    """Hires fix and the extras endpoints: float32 when the models run in float32; otherwise the precision each
    upscaler architecture allows (a named float16 is refused by architectures such as SwinIR, DAT and HAT)."""
    from sdart.settings import Settings
    from sdart.upscalers.extras import Runner

    settings = Settings(dtype=engine_dtype, device="cpu", upscaler_dir=tmp_path, upscaler_tile=256)
    runner = Runner.of_settings(settings)
    assert (runner.dtype, runner.device, runner.folder, runner.tile) == (expected, "cpu", tmp_path, 256)
    assert Runner.of_settings(settings, "cuda:1").device == "cuda:1"
