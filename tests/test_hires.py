"""Hires fix: A1111's size rules, its step counting, every upscaler, the second pass's own fields, progress over
both passes, the infotext both ways, `--from` of an A1111 hires infotext, and on the bundled shapes model a hires
picture that still shows the prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin
from training.shapes_data import analyze_image
from typer.testing import CliRunner

from sdart.cli.app import app
from sdart.images.infotext import parse_infotext, read_infotext
from sdart.request import GenerationRequest, RequestError
from sdart.run.hires import hires_steps
from sdart.run.hires_size import hires_size
from sdart.run.upscale import LATENT_UPSCALE_MODES, upscale_latents

runner = CliRunner()
HIRES = dict(prompt="a red fox", steps=3, seed=7, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def hires(engine, **fields):
    return engine.generate(GenerationRequest.parse({**HIRES, **fields}), progress=False)


# --- A1111's rules, as pure functions ------------------------------------------------------------------------

# Expected sizes worked out by hand from A1111 processing.py `calculate_target_resolution`:
# no box → int(side × scale); one side → that side, the other side × box / side (integer division); both sides →
# cover the box (the side whose ratio fits is exact), then truncate (overhang // 8) latent pixels, centred.
SIZE_CASES = [
    # (first pass w, h, scale, resize_x, resize_y) → (upscale w, h, final w, h)
    ((512, 512, 2.0, 0, 0), (1024, 1024, 1024, 1024)),
    ((512, 768, 1.5, 0, 0), (768, 1152, 768, 1152)),
    ((512, 512, 1.3, 0, 0), (665, 665, 664, 664)),  # int(665.6); the last 1 px doesn't fill a latent pixel
    ((512, 768, 2.0, 1024, 0), (1024, 1536, 1024, 1536)),  # the scale is ignored once a box side is given
    ((512, 768, 2.0, 0, 1024), (682, 1024, 680, 1024)),  # 1024 × 512 // 768 = 682
    ((512, 512, 2.0, 1024, 768), (1024, 1024, 1024, 768)),  # wider box: width exact, 256 px (32 latent) cut
    ((768, 512, 2.0, 1024, 1024), (1536, 1024, 1024, 1024)),  # taller box: height exact, 512 px cut
]


@pytest.mark.parametrize("given, expected", SIZE_CASES, ids=[str(c[0]) for c in SIZE_CASES])
def test_hires_size_follows_a1111(given, expected):
    size = hires_size(*given)
    assert (size.upscale_width, size.upscale_height, size.width, size.height) == expected


def test_the_overhang_is_cut_in_latent_pixels_centred_as_a1111():
    """A1111 keeps samples[:, :, ty//2 : H - (ty+1)//2, tx//2 : W - (tx+1)//2] with t the overhang in latent
    pixels; an odd overhang leaves its extra pixel on the right/bottom."""
    size = hires_size(512, 512, 2.0, 1024, 744)  # 1024 - 744 = 280 px = 35 latent pixels
    assert size.crop_y == 35 and size.crop_box() == (0, 17, 128, 110) and size.height == 744
    latents = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    for name, (mode, antialias) in LATENT_UPSCALE_MODES.items():
        upscaled = F.interpolate(latents, size=(128, 128), mode=mode, antialias=antialias)
        assert torch.equal(upscale_latents(latents, name, size), upscaled[:, :, 17:128 - 18, 0:128]), name


def test_the_second_pass_runs_its_steps_from_the_strength_s_noise_level_as_a1111():
    """A1111 (sd_samplers_common.setup_img2img_steps with steps given) runs a hires pass of n steps as the last n
    of int(n / min(strength, 0.999)) steps; diffusers runs int(length × strength) of `length`."""
    for n, strength, length in ((20, 0.7, 28), (20, 0.5, 40), (20, 1.0, 20), (10, 0.05, 200), (3, 0.7, 4)):
        got_length, diffusers_strength = hires_steps(n, strength, 1000)
        assert got_length == length and int(got_length * diffusers_strength) == n
    assert hires_steps(20, 0.01, 1000)[0] == 1000  # the schedule stops at the training timesteps


# --- requests ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, field, phrase", [
    ({"hr_scale": 9}, "hr_scale", "less than or equal to 8"),
    ({"width": 512, "height": 512, "hr_scale": 8.5}, "hr_scale", "less than or equal to 8"),
    ({"width": 1024, "height": 1024, "hr_scale": 5}, "hr_scale", "hr_scale: the hires picture would be 5120x5120"),
    ({"width": 512, "height": 512, "hr_resize_x": 5000}, "hr_resize_x", "less than or equal to 4096"),
    ({"hr_upscaler": " "}, "hr_upscaler", "must name an upscaler"),
    ({"hr_sampler_name": "Euler b"}, "hr_sampler_name", "unknown sampler"),
    ({"hr_scheduler": "Quadratic"}, "hr_scheduler", "unknown schedule type"),
    ({"hr_sampler_name": "PLMS", "hr_scheduler": "Karras"}, "hr_scheduler", "hr_scheduler: sampler 'PLMS'"),
    ({"hr_second_pass_steps": -1}, "hr_second_pass_steps", "greater than or equal to 0"),
    ({"denoising_strength": 0}, "denoising_strength", "greater than 0"),
])
def test_bad_hires_fields_are_named(fields, field, phrase):
    with pytest.raises(RequestError) as caught:
        GenerationRequest.parse({"prompt": "x", "enable_hr": True, **fields})
    name, _, message = caught.value.errors[0]
    assert name == field and phrase in message, caught.value


def test_hires_requests_take_a1111_spellings(tmp_path):
    picture = tmp_path / "p.png"
    Image.new("RGB", (64, 64)).save(picture)
    r = GenerationRequest.parse(enable_hr=True, hr_sampler_name="Use same sampler", hr_scheduler="Use same scheduler",
                                hr_upscaler="latent (BICUBIC antialiased)")
    assert (r.hr_sampler_name, r.hr_scheduler, r.hr_upscaler) == (None, None, "Latent (bicubic antialiased)")
    assert GenerationRequest.parse(hr_upscaler=None).hr_upscaler == "Latent"  # A1111's API default
    with pytest.raises(RequestError, match="enable_hr: hires fix is a second pass of txt2img"):
        GenerationRequest.parse(enable_hr=True, init_image=str(picture))


def test_strength_defaults_to_a1111_s_for_hires_and_img2img(tiny_engine, tmp_path):
    picture = tmp_path / "p.png"
    Image.new("RGB", (64, 64)).save(picture)
    resolve = tiny_engine.resolve_request
    assert resolve(GenerationRequest(enable_hr=True)).denoising_strength == 0.7  # the web UI's hires slider
    assert resolve(GenerationRequest(init_image=str(picture))).denoising_strength == 0.75
    assert resolve(GenerationRequest(enable_hr=True, denoising_strength=0.3)).denoising_strength == 0.3


# --- the run on the tiny model -------------------------------------------------------------------------------

@pytest.mark.parametrize("upscaler", [*LATENT_UPSCALE_MODES, "None", "Lanczos", "Nearest"])
def test_every_upscaler_gives_the_hires_size(tiny_engine, upscaler):
    result = hires(tiny_engine, hr_upscaler=upscaler, hr_second_pass_steps=1)
    assert result.images[0].size == (96, 96)  # 64 × 1.5
    assert parse_infotext(result.infotexts[0]).params["Hires upscaler"] == upscaler


def test_a_resize_box_crops_the_overhang(tiny_engine):
    result = hires(tiny_engine, hr_resize_x=128, hr_resize_y=80, width=64, height=64)
    assert result.images[0].size == (128, 80)
    assert parse_infotext(result.infotexts[0]).params["Hires resize"] == "128x80"


def test_progress_counts_both_passes(tiny_engine):
    seen = []
    tiny_engine.generate(GenerationRequest.parse({**HIRES, "steps": 4, "hr_second_pass_steps": 3, "n_iter": 2}),
                         on_step=lambda p: seen.append((p.iteration, p.step, p.total)))
    assert seen == [(i, step, 7) for i in range(2) for step in range(1, 8)]  # 4 first-pass + 3 hires steps
    seen.clear()
    tiny_engine.generate(GenerationRequest.parse({**HIRES, "steps": 4, "hr_second_pass_steps": 0}),
                         on_step=lambda p: seen.append(p.total))
    assert seen == [8] * 8  # 0: the first pass's 4 steps again


def test_each_second_pass_field_reaches_the_second_pass(tiny_engine):
    # 3 hires steps: the last 3 of a 4-step schedule, so that schedule types differ in its inner sigmas
    base = pixels(hires(tiny_engine, hr_second_pass_steps=3).images[0])
    # Spelled out as the first pass's, the second pass is the same; changed, it differs.
    same = dict(hr_prompt="a red fox", hr_cfg=7.0, hr_sampler_name="DPM++ 2M Karras", hr_second_pass_steps=3)
    assert np.array_equal(pixels(hires(tiny_engine, **same).images[0]), base)
    for change in ({"hr_prompt": "a blue whale"}, {"hr_negative_prompt": "red"}, {"hr_cfg": 2.0},
                   {"hr_sampler_name": "Euler"}, {"hr_scheduler": "Exponential"}, {"hr_second_pass_steps": 2},
                   {"denoising_strength": 0.3}):
        changed = pixels(hires(tiny_engine, **{"hr_second_pass_steps": 3, **change}).images[0])
        assert not np.array_equal(changed, base), change


def test_strength_near_0_keeps_the_upscaled_first_pass_and_1_redraws_it(tiny_engine):
    """Decoding the first pass's latents upscaled in latent space gives the picture a near-0 strength ends with
    (its few steps start at a tiny noise level); at strength 1 the second pass draws anew from noise."""
    pipe = tiny_engine.model.pipeline

    def run(strength):
        first = []
        image = tiny_engine.generate(GenerationRequest.parse({**HIRES, "denoising_strength": strength}),
                                     on_step=lambda p: first.append(p.latents) if p.step == 3 else None).images[0]
        return image, first[0]

    kept, first_latents = run(0.01)
    upscaled = upscale_latents(first_latents, "Latent", hires_size(64, 64, 1.5))
    with torch.no_grad():
        decoded = pipe.vae.decode(upscaled / pipe.vae.config.scaling_factor).sample
    expected = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
    kept_diff = np.abs(pixels(kept) - pixels(expected)).mean()
    redrawn_diff = np.abs(pixels(run(1.0)[0]) - pixels(expected)).mean()
    assert kept_diff < 2 and redrawn_diff > 5 * kept_diff, (kept_diff, redrawn_diff)


# --- infotext ----------------------------------------------------------------------------------------------

def test_hires_infotext_keys_as_a1111_writes_them(tiny_engine):
    text = hires(tiny_engine, hr_prompt="a red fox, at dusk", hr_sampler_name="Euler", hr_cfg=5).infotexts[0]
    params = parse_infotext(text).params
    assert params["Size"] == "64x64"  # A1111: the first pass's size; the picture is 96x96
    assert (params["Denoising strength"], params["Hires upscale"], params["Hires steps"]) == ("0.7", "1.5", "2")
    assert (params["Hires upscaler"], params["Hires sampler"], params["Hires CFG Scale"]) == ("Latent", "Euler", "5")
    assert params["Hires prompt"] == "a red fox, at dusk" and '"a red fox, at dusk"' in text  # quoted: a comma
    assert "Hires schedule type" not in params  # Euler takes the first pass's Karras schedule
    plain = parse_infotext(hires(tiny_engine, hr_second_pass_steps=0).infotexts[0]).params
    assert not {"Hires steps", "Hires sampler", "Hires prompt", "Hires CFG Scale"} & set(plain)


def test_hires_infotext_reads_back_into_the_same_request(tiny_engine):
    result = hires(tiny_engine, hr_resize_x=128, hr_resize_y=80, hr_upscaler="Nearest", hr_sampler_name="PLMS",
                   hr_negative_prompt="blurry", hr_cfg=4.5, denoising_strength=0.55)
    fields = parse_infotext(result.infotexts[0]).request_fields()
    again = GenerationRequest.parse(fields)
    hires_fields = ("enable_hr", "hr_resize_x", "hr_resize_y", "hr_upscaler", "hr_second_pass_steps",
                    "hr_sampler_name", "hr_negative_prompt", "hr_cfg", "denoising_strength",
                    "width", "height", "seed", "steps")
    assert {f: getattr(again, f) for f in hires_fields} == {f: getattr(result.request, f) for f in hires_fields}
    # PLMS steps on its own grid: the first pass's Karras can't be inherited, the hires pass says what it ran on.
    assert again.hr_scheduler == "Automatic"


def _png_with(path, text):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def test_from_an_a1111_hires_infotext_reproduces_sdart_s_own_picture(tiny_engine, tiny_model_dir, tmp_path):
    """The infotext as A1111 1.10 writes it for a hires image (keys, order, seed past 2**32, quoted values)."""
    text = ('a red fox, in the snow\nNegative prompt: blurry\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, '
            'CFG scale: 6.5, Seed: 1087151610341875, Size: 64x64, Model hash: 6ce0161689, Model: tiny-sd15, '
            'Denoising strength: 0.45, Hires prompt: "a red fox, at night", Hires upscale: 1.5, Hires steps: 2, '
            'Hires upscaler: Latent (bicubic), Version: v1.10.1')
    source = _png_with(tmp_path / "a1111.png", text)
    run = runner.invoke(app, ["generate", "--from", str(source), "--model", str(tiny_model_dir), "--device", "cpu",
                              "--dtype", "float32", "-o", str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    made = Image.open(tmp_path / "out" / "00001-1087151610341875.png")
    own = tiny_engine.generate(prompt="a red fox, in the snow", negative_prompt="blurry", steps=3,
                               sampler_name="DPM++ 2M", scheduler="Karras", cfg_scale=6.5, seed=1087151610341875,
                               width=64, height=64, enable_hr=True, denoising_strength=0.45,
                               hr_prompt="a red fox, at night", hr_scale=1.5, hr_second_pass_steps=2,
                               hr_upscaler="Latent (bicubic)", progress=False)
    assert made.size == (96, 96) and np.array_equal(pixels(made), pixels(own.images[0]))
    params = parse_infotext(read_infotext(tmp_path / "out" / "00001-1087151610341875.png")).params
    assert params["Hires prompt"] == "a red fox, at night" and params["Seed"] == "1087151610341875"


def test_cli_hires_options(tiny_model_dir, tmp_path):
    base = ["generate", "a fox", "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32",
            "--steps", "2", "--seed", "3", "-o", str(tmp_path)]
    run = runner.invoke(app, [*base, "--hires-size", "96x0", "--hires-steps", "1", "--hires-upscaler", "Lanczos",
                              "--hires-strength", "0.5", "--hires-sampler", "Euler", "--hires-prompt", "a cat"])
    assert run.exit_code == 0, run.output
    made = tmp_path / "00001-3.png"
    params = parse_infotext(read_infotext(made)).params
    assert Image.open(made).size == (96, 96)
    assert (params["Hires resize"], params["Hires steps"], params["Hires upscaler"]) == ("96x0", "1", "Lanczos")
    assert (params["Denoising strength"], params["Hires sampler"], params["Hires prompt"]) == ("0.5", "Euler", "a cat")
    for bad, phrase in ((["--hires-size", "96"], "--hires-size = '96': must be WIDTHxHEIGHT"),
                        (["--no-hires", "--hires-scale", "2"], "--no-hires: the --hires-* options"),
                        (["--hires-scale", "0"], "hr_scale = 0")):
        failed = runner.invoke(app, [*base, *bad])
        assert failed.exit_code == 2 and phrase in failed.output, failed.output


def test_an_upscaler_model_from_the_folder_runs_and_an_unknown_one_is_named_before_the_first_pass(tiny_model_dir,
                                                                                                 tmp_path,
                                                                                                 monkeypatch):
    from sdart.engine import Engine
    from sdart.settings import Settings
    from sdart.upscalers import pixel
    from sdart.upscalers.tiny import save_tiny_upscaler

    save_tiny_upscaler(tmp_path / "ups" / "4x-tiny.pth", "ESRGAN")
    engine = Engine(str(tiny_model_dir), settings=Settings(device="cpu", dtype="float32",
                                                           upscaler_dir=tmp_path / "ups"))
    ran = []  # the model itself upscales each first-pass picture (not a resize under its name)
    monkeypatch.setattr(pixel, "upscale_with_model", lambda image, model, target, _run=pixel.upscale_with_model,
                        **options: ran.append((image.size, target)) or _run(image, model, target, **options))
    result = hires(engine, hr_upscaler="4x-tiny", hr_second_pass_steps=1, batch_size=2)  # a 4× model asked for 1.5×
    assert ran == [((64, 64), (96, 96))] * 2
    assert result.images[0].size == (96, 96)
    assert parse_infotext(result.infotexts[0]).params["Hires upscaler"] == "4x-tiny"
    steps = []
    with pytest.raises(ValueError, match="hr_upscaler = '4x-UltraSharp': upscaler '4x-UltraSharp': no such upscaler"):
        engine.generate(GenerationRequest.parse({**HIRES, "hr_upscaler": "4x-UltraSharp"}), on_step=steps.append)
    assert steps == []


# --- the shapes model: the picture still follows the prompt ----------------------------------------------------

@pytest.fixture(scope="module")
def shapes_engine():
    from sdart.engine import Engine
    from sdart.settings import Settings

    return Engine("builtin:shapes", settings=Settings(device="cpu", dtype="float32"))


def _read(image) -> tuple[str, str, str]:
    found = analyze_image(image.resize((64, 64), Image.Resampling.BOX))  # the checker grades 64×64 pictures
    return found["color"], found["shape"], found["bg"]


def test_on_the_shapes_model_hires_keeps_the_prompt_and_strength_sets_how_much_is_redrawn(shapes_engine):
    red = dict(prompt="a red circle on a white background", seed=0, steps=8, hr_second_pass_steps=6)
    plain = shapes_engine.generate(**red, progress=False).images[0]
    upscaled = np.asarray(plain.resize((128, 128), Image.Resampling.LANCZOS), dtype=np.float32)

    def redrawn(strength, upscaler):
        image = shapes_engine.generate(**red, enable_hr=True, hr_upscaler=upscaler, denoising_strength=strength,
                                       progress=False).images[0]
        return image, float(np.abs(np.asarray(image, dtype=np.float32) - upscaled).mean())

    hires_image, _ = redrawn(0.7, "Latent")
    assert hires_image.size == (128, 128) and _read(hires_image) == ("red", "circle", "white")
    kept, kept_diff = redrawn(0.05, "Lanczos")  # near 0: the upscaled first pass, through the VAE
    assert _read(kept) == ("red", "circle", "white") and kept_diff < 8, kept_diff
    _, full_diff = redrawn(1.0, "Lanczos")  # 1: drawn anew from noise at 128 px
    assert full_diff > 3 * kept_diff, (full_diff, kept_diff)
