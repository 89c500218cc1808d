"""The page for a day's work, end to end in headless Chromium on the bundled shapes model (64 px): settings kept
across reloads, the LoRA and embedding browsers, inpainting painted in the browser, PNG info dropped on the
page, the full-size view and send-to, the queue view with other clients' jobs, the model picker, hires fix.
Screenshots of the main views are saved as test artifacts (docs/screenshots/ holds the ones docs/server.md
shows)."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from playwright.sync_api import expect

from sdart.images.infotext import parse_infotext

pytestmark = pytest.mark.browser
# Test artifacts; SDART_SCREENSHOTS_DIR=docs/screenshots refreshes the copies the docs show.
SCREENSHOTS = Path(os.environ.get("SDART_SCREENSHOTS_DIR") or
                   Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots").resolve()
RED = "a red circle on a white background"
DONE = "() => document.querySelector('#progress-text').textContent === 'Done'"
PAINTED = """() => { const c = document.querySelector('#mask-canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] >= 128; return n; }"""  # mask pixels painted


@pytest.fixture
def page(open_page, shapes_server):
    return open_page(shapes_server.url + "/")


def screenshot(page, name: str, selector: str | None = None, full_page: bool = False) -> None:
    """A view for the docs: the page (or one part of it), as a user sees it."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # CSS transitions (the progress bar's 0.15 s) end before the picture is taken
    target = page.locator(selector) if selector else page
    shot = Image.open(io.BytesIO(target.screenshot(**({"full_page": True} if full_page else {}))))
    shot.convert("RGB").quantize(256).save(SCREENSHOTS / f"{name}.png", optimize=True)  # small for the repo


def png_bytes(image: Image.Image, infotext: str | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def decode_data_url(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def generate(page) -> dict:
    """Click Generate and wait for Done; returns the job request the page sent."""
    page.evaluate("document.querySelector('#progress-text').textContent = ''")  # not the last job's "Done"
    with page.expect_request(lambda r: r.url.endswith("/api/v1/jobs") and r.method == "POST") as sent:
        page.click("#generate")
    page.wait_for_function(f"() => ({DONE})() || document.querySelector('#form-errors').textContent", timeout=60_000)
    assert page.inner_text("#progress-text") == "Done", page.inner_text("#form-errors")
    return sent.value.post_data_json


def test_settings_survive_a_reload_and_advanced_starts_closed(page):
    assert page.locator("#advanced").get_attribute("open") is None
    page.fill("#prompt", "a blue square on a yellow background")
    page.fill("#negative_prompt", "blurry")
    page.fill("#steps", "7")
    page.fill("#seed", "3")
    page.fill("#cfg_scale", "5.5")
    page.select_option("#sampler_name", "Euler")
    page.click("#advanced > summary")
    page.fill("#clip_skip", "2")
    page.select_option("#scheduler", "Karras")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#advanced").get_attribute("open") is None
    kept = {name: page.input_value(f"#{name}") for name in
            ("prompt", "negative_prompt", "steps", "cfg_scale", "sampler_name", "clip_skip", "scheduler")}
    assert kept == {"prompt": "a blue square on a yellow background", "negative_prompt": "blurry", "steps": "7",
                    "cfg_scale": "5.5", "sampler_name": "Euler", "clip_skip": "2", "scheduler": "Karras"}
    # And they are what the next job is made with.
    page.fill("#steps", "2")
    sent = generate(page)
    assert (sent["clip_skip"], sent["scheduler"], sent["sampler_name"]) == (2, "Karras", "Euler")
    assert "Clip skip: 2" in page.inner_text("#result-params")


def test_lora_and_embedding_browsers_write_at_the_cursor(page, shapes_server):
    """The shapes server's LoRA folder (shapes-bold) and embeddings folder (roundish fits, wide-one does not)."""
    name = "shapes-bold"
    page.fill("#prompt", "a circle on a white background")
    page.evaluate("() => { const p = document.querySelector('#prompt'); p.focus(); p.setSelectionRange(2, 2); }")
    page.click("#lora-button")
    page.fill("#addon-filter", name[:4])
    expect(page.locator("#addon-list li:not([hidden])")).to_have_count(1)
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.input_value("#prompt") == f"a <lora:{name}:1> circle on a white background"

    # An embedding's word goes where the cursor is in the negative prompt; one that doesn't fit can't be chosen.
    page.fill("#negative_prompt", "blurry")
    page.focus("#negative_prompt")
    page.click("#embedding-button")
    expect(page.locator("#addon-title")).to_have_text("Embeddings")
    words = page.locator("#addon-list button:not([disabled]) .name").all_inner_texts()
    assert words == ["roundish"]  # wide-one (768 wide) does not fit the shapes model: listed, not choosable
    assert page.locator("#addon-list button[disabled] .name").all_inner_texts() == ["wide-one"]
    page.click("#addon-list button:not([disabled])")
    assert page.input_value("#negative_prompt") == "blurry roundish"

    page.fill("#steps", "2")
    page.fill("#seed", "4")
    generate(page)
    infotext = parse_infotext(page.inner_text("#result-params"))
    assert infotext.prompt == f"a <lora:{name}:1> circle on a white background"
    assert infotext.params["Lora hashes"].startswith(f"{name}: ")  # applied, so named with its hash
    assert infotext.negative_prompt == "blurry roundish" and "roundish: " in infotext.params["TI hashes"]


def test_paint_a_mask_and_only_that_region_changes(page, tmp_path):
    # A picture whose every pixel the model would redraw: stripes no shape prompt makes.
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::4] = (20, 120, 220)
    stripes[::4, :] = (240, 200, 20)
    picture = tmp_path / "stripes.png"
    Image.fromarray(stripes).save(picture)
    page.fill("#prompt", RED)
    page.fill("#steps", "8")
    page.fill("#seed", "11")
    page.set_input_files("#init_image", str(picture))
    page.wait_for_selector("#picture-panel:not([hidden])")
    page.check("#inpaint")
    page.fill("#denoising_strength", "1")
    page.fill("#mask_blur", "0")
    page.eval_on_selector("#brush-size", "(r) => { r.value = 20; r.dispatchEvent(new Event('input')); }")  # px

    # Paint a stroke across the upper left, rub a bit of it out with the eraser.
    box = page.locator("#mask-canvas").bounding_box()
    scale = box["width"] / 64

    def drag(points):
        page.mouse.move(box["x"] + points[0][0] * scale, box["y"] + points[0][1] * scale)
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=4)
        page.mouse.up()

    drag([(12, 14), (30, 14), (30, 26)])
    page.check("#brush-erase")
    drag([(12, 14), (13, 14)])
    page.check("#brush-paint")
    screenshot(page, "inpainting", "#picture-section")
    sent = generate(page)

    mask = np.asarray(decode_data_url(sent["mask"]).convert("L")) > 127
    assert mask.shape == (64, 64) and set(np.unique(np.asarray(decode_data_url(sent["mask"]).convert("L")))) == {0, 255}
    assert mask[20, 25] and mask[14, 28] and not mask[14, 12] and not mask[50, 50]  # painted, erased, untouched
    assert 150 < mask.sum() < 900
    result = page.evaluate("fetch(document.querySelector('#result-image').src).then(r => r.arrayBuffer())"
                           ".then(b => btoa(String.fromCharCode(...new Uint8Array(b))))")
    made = np.asarray(Image.open(io.BytesIO(base64.b64decode(result))).convert("RGB")).astype(int)
    assert made.shape == (64, 64, 3)
    # Outside the mask (blur 0) the picture is kept pixel for pixel; inside, the model redrew it.
    assert np.array_equal(made[~mask], stripes[~mask].astype(int))
    assert np.abs(made[mask] - stripes[mask]).mean() > 20
    assert "Mask blur: 0" in page.inner_text("#result-params")

    # Invert turns the painted region over; Clear empties it, and an empty mask is not sent.
    page.click("#mask-invert")
    inverted = page.evaluate(PAINTED)
    assert inverted == 64 * 64 - mask.sum()
    page.click("#mask-clear")
    page.click("#generate")
    expect(page.locator('.field-error[data-for="mask"]')).to_contain_text("paint where to redraw")
    # From the keyboard: the brush starts in the middle; an arrow moves it, Space paints a dab there.
    page.focus("#mask-canvas")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Space")
    dab = page.evaluate("""() => { const c = document.querySelector('#mask-canvas');
        const at = (x, y) => c.getContext('2d').getImageData(x, y, 1, 1).data[3];
        return [at(42, 32), at(10, 32)]; }""")
    assert dab[0] == 255 and dab[1] == 0  # brush 20 px: centre at x = 32 + 10

    # A mask file (white = redraw) at half the picture's size replaces the painting, scaled to fit.
    half = np.zeros((32, 32), dtype=np.uint8)
    half[:16, :16] = 255
    page.set_input_files("#mask-file", files=[{"name": "mask.png", "mimeType": "image/png",
                                               "buffer": png_bytes(Image.fromarray(half))}])
    page.wait_for_function(f"() => ({PAINTED})() === 32 * 32")
    assert page.evaluate("""() => { const d = document.querySelector('#mask-canvas').getContext('2d')
        .getImageData(0, 0, 32, 32).data; for (let i = 3; i < d.length; i += 4) if (d[i] < 255) return false;
        return true; }""")  # the whole upper-left quarter


def test_a_dropped_png_fills_the_form_and_names_what_is_not_applied(page):
    infotext = ("a green diamond on a black background\nNegative prompt: red\nSteps: 9, Sampler: Euler, "
                "CFG scale: 4.5, Seed: 1234, Size: 64x64, Model hash: c7cd3b951e, Model: builtin:shapes, "
                "Face restoration: CodeFormer, ADetailer model: face_yolov8n.pt, Version: v1.10.1")
    data = base64.b64encode(png_bytes(Image.new("RGB", (64, 64), "black"), infotext)).decode()
    page.evaluate("""(data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "shared.png", { type: "image/png" }));
        for (const type of ["dragenter", "dragover", "drop"]) {
            document.querySelector("#gallery-title").dispatchEvent(
                new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
        } }""", data)
    dialog = page.locator("#png-info")
    expect(dialog).to_be_visible()
    table = page.inner_text("#png-info-table")
    assert "a green diamond on a black background" in table and "CodeFormer" in table
    assert page.locator("#png-info-unapplied-list li").all_inner_texts() == [
        "Face restoration: CodeFormer", "ADetailer model: face_yolov8n.pt"]
    screenshot(page, "png-info")
    page.click("#png-info-apply")
    expect(dialog).to_be_hidden()
    form = {name: page.input_value(f"#{name}") for name in
            ("prompt", "negative_prompt", "steps", "sampler_name", "cfg_scale", "seed", "width", "height", "model")}
    assert form == {"prompt": "a green diamond on a black background", "negative_prompt": "red", "steps": "9",
                    "sampler_name": "Euler", "cfg_scale": "4.5", "seed": "1234", "width": "64", "height": "64",
                    "model": "builtin:shapes"}
    assert "not applied: Face restoration, ADetailer model" in page.inner_text("#form-notice")

    # A PNG without parameters says so and offers nothing to apply.
    page.set_input_files("#png-info-file", files=[{"name": "plain.png", "mimeType": "image/png",
                                                   "buffer": png_bytes(Image.new("RGB", (8, 8)))}])
    expect(page.locator("#png-info-name")).to_have_text("plain.png carries no generation parameters.")
    assert page.locator("#png-info-apply").is_hidden()


def test_full_size_view_send_to_img2img_and_delete(page, shapes_server):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.fill("#prompt", RED)
    page.fill("#steps", "6")
    page.fill("#seed", "21")
    page.fill("#batch_size", "2")
    generate(page)
    job = shapes_server.client.get("/api/v1/jobs", params={"limit": 1}).json()["jobs"][0]
    assert job["seeds"] == [21, 22]
    screenshot(page, "page", full_page=True)

    page.click("#open-full")
    expect(page.locator("#lightbox")).to_be_visible()
    expect(page.locator("#lb-info")).to_have_text("1 / 2 · seed 21")
    screenshot(page, "full-size")
    page.keyboard.press("+")  # fit → 100 %
    page.keyboard.press("+")  # → 200 %
    expect(page.locator("#lb-zoom")).to_have_text("200%")
    assert page.evaluate("document.querySelector('#lb-image').getBoundingClientRect().width") == 128
    page.keyboard.press("ArrowRight")
    expect(page.locator("#lb-info")).to_have_text("2 / 2 · seed 22")
    assert page.get_attribute("#lb-download", "href") == job["images"][1]["url"]
    assert page.get_attribute("#lb-download", "download") == "sdart-22.png"
    page.click("#lb-copy")
    assert page.evaluate("navigator.clipboard.readText()") == job["images"][1]["infotext"]
    page.keyboard.press("Escape")
    expect(page.locator("#lightbox")).to_be_hidden()

    # Send the second image to img2img: it becomes the start picture, its settings fill the form.
    page.fill("#prompt", "something else")
    page.click('[data-send="img2img"]')
    page.wait_for_selector("#picture-panel:not([hidden])")
    assert page.input_value("#prompt") == RED
    assert page.evaluate("document.querySelector('#init-preview').naturalWidth") == 64

    # Send it to upscaling (A1111's extras, where the server has them): Lanczos needs no model file.
    if shapes_server.client.get("/sdapi/v1/upscalers").status_code == 200:
        page.click('[data-send="upscale"]')
        page.select_option("#upscaler_1", "Lanczos")
        page.fill("#upscaling_resize", "2")
        page.click("#upscale-run")
        page.wait_for_function("() => document.querySelector('#upscale-result').naturalWidth === 128", timeout=30_000)
        assert page.get_attribute("#upscale-result-link", "download") == "upscaled.png"
        expect(page.locator("#upscale-status")).to_contain_text("128×128")

    # Delete the job: its images go, from the server and from the history.
    page.click("#delete-job")
    expect(page.locator("#placeholder")).to_have_text("Deleted the job and its 2 image(s).")
    assert shapes_server.client.get(job["images"][0]["url"]).status_code == 404
    expect(page.locator(f'.gallery-item[data-job="{job["id"]}"]')).to_have_count(0)


def test_queue_view_shows_other_clients_jobs_and_cancels_them(page, shapes_server):
    running = shapes_server.submit(prompt="a long job from a script", steps=150, n_iter=4, seed=1)
    waiting = shapes_server.submit(prompt="waiting behind it", steps=2, seed=2)
    running_item = page.locator(f'#queue [data-job="{running}"]')
    expect(running_item).to_contain_text("running · step", timeout=30_000)
    expect(running_item).to_contain_text("from api")
    expect(page.locator(f'#queue [data-job="{waiting}"]')).to_contain_text("#1 in line")
    page.wait_for_function(f"() => +document.querySelector('#queue [data-job=\"{running}\"] [role=progressbar]')"
                           ".getAttribute('aria-valuenow') > 0")
    screenshot(page, "queue", ".queue-panel")
    running_item.get_by_role("button", name="Cancel").click()
    assert shapes_server.wait(running, timeout=30)["status"] == "cancelled"
    assert shapes_server.wait(waiting)["status"] == "succeeded"
    expect(page.locator("#queue-empty")).to_be_visible()
    expect(page.locator(f'.gallery-item[data-job="{waiting}"]')).to_be_visible()  # history noticed it too

    # The history filtered by prompt text, then by status.
    page.fill("#history-text", "from a script")
    expect(page.locator(".gallery-item")).to_have_count(1)
    expect(page.locator(f'.gallery-item[data-job="{running}"]')).to_contain_text("cancelled")
    page.fill("#history-text", "")
    page.select_option("#history-status", "cancelled")
    expect(page.locator(f'.gallery-item[data-job="{waiting}"]')).to_have_count(0)
    assert all("cancelled" in text for text in page.locator(".gallery-item .badge").all_inner_texts())


def test_model_picker_switches_and_is_refused_while_a_job_runs(page, shapes_server, tiny_model_dir):
    busy = shapes_server.submit(prompt="keeps the worker busy", steps=150, n_iter=4)
    shapes_server.wait(busy, until=lambda job: job["status"] == "running")
    page.select_option("#model", tiny_model_dir.name)
    note = page.locator('.field-error[data-for="model"]')
    expect(note).to_contain_text("1 job(s) running")
    assert page.input_value("#model") == "builtin:shapes"  # back on the loaded model
    shapes_server.client.post(f"/api/v1/jobs/{busy}/cancel")
    shapes_server.wait(busy)

    page.select_option("#model", tiny_model_dir.name)
    expect(page.locator("#model-status")).to_contain_text(f"{tiny_model_dir.name} loaded in", timeout=60_000)
    assert note.count() == 0
    page.select_option("#model", "builtin:shapes")
    expect(page.locator("#model-status")).to_contain_text("builtin:shapes loaded in", timeout=60_000)
    page.fill("#prompt", RED)
    page.fill("#steps", "2")
    sent = generate(page)
    assert sent["model"] == "builtin:shapes" and 'Model: "builtin:shapes"' in page.inner_text("#result-params")


def test_vae_picker_sends_the_chosen_vae(page):
    expect(page.locator("#vae-field")).to_be_visible()
    assert page.locator("#vae option").all_inner_texts() == ["Automatic", "shapes-vae"]
    page.select_option("#vae", "shapes-vae")
    page.fill("#prompt", RED)
    page.fill("#steps", "2")
    page.fill("#seed", "6")
    sent = generate(page)
    assert sent["vae"] == "shapes-vae" and "VAE: shapes-vae" in page.inner_text("#result-params")
    page.select_option("#vae", "Automatic")
    assert generate(page)["vae"] == "Automatic" and "VAE:" not in page.inner_text("#result-params")


def test_hires_fix_gives_the_hires_size(page, shapes_server):
    if "enable_hr" not in shapes_server.client.get("/api/v1/request-schema").json()["properties"]:
        assert page.locator("#hires-section").is_hidden()  # a field the server would refuse is never offered
        pytest.skip("this server has no hires fix yet")
    page.fill("#prompt", RED)
    page.fill("#steps", "4")
    page.check("#enable_hr")
    page.fill("#hr_scale", "2")
    page.fill("#hr_denoising_strength", "0.5")
    sent = generate(page)
    assert sent["enable_hr"] is True and sent["hr_scale"] == 2 and sent["denoising_strength"] == 0.5
    page.wait_for_function("() => document.querySelector('#result-image').naturalWidth === 128")
