"""The web page in real headless Chromium (Debian's package, driven by Playwright): type a prompt, generate with
the tiny model, watch progress, see the image, open a past job from the gallery, reuse its settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.browser


@pytest.fixture
def page(open_page, live_server):
    return open_page(live_server.url + "/")


def test_generate_watch_progress_open_from_gallery(page, live_server):
    earlier = live_server.submit(prompt="an earlier job from the API", steps=2, seed=4242)
    live_server.wait(earlier)
    page.click("#refresh")
    page.wait_for_selector(f'.gallery-item[data-job="{earlier}"]')

    # Keyboard only: type the settings, Ctrl+Enter generates.
    page.focus("#prompt")
    page.keyboard.type("a small red boat on a calm lake")
    page.fill("#steps", "60")
    page.fill("#seed", "77")
    page.select_option("#sampler_name", "Euler")
    # Count the live previews the viewer shows while the job runs (latent size: 8 px for a 64 px image).
    page.evaluate("""() => { window.previewsShown = 0; const image = document.querySelector('#result-image');
        image.addEventListener('load', () => {
            if (image.classList.contains('preview') && image.naturalWidth === 8) window.previewsShown++; }); }""")
    page.keyboard.press("Control+Enter")

    # Progress from the event stream: somewhere strictly between empty and full, then full.
    page.wait_for_function("() => { const v = +document.querySelector('#progress').getAttribute('aria-valuenow');"
                           " return v > 0 && v < 100; }", timeout=30_000)
    assert "step" in page.inner_text("#progress-text")
    page.wait_for_function("() => document.querySelector('#progress-text').textContent === 'Done'", timeout=60_000)
    assert page.get_attribute("#progress", "aria-valuenow") == "100"
    assert page.evaluate("window.previewsShown") > 0

    image = page.locator("#result-image")
    page.wait_for_function("() => { const i = document.querySelector('#result-image');"
                           " return !i.hidden && i.complete && i.naturalWidth === 64; }")
    assert "seed 77" in image.get_attribute("alt")
    params = page.inner_text("#result-params")
    assert params.startswith("a small red boat on a calm lake\n") and "Seed: 77" in params and "Sampler: Euler," in params
    assert page.failed_responses == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "server-page.png"), full_page=True)

    # The new job heads the gallery; open the earlier one and reuse its settings.
    expect(page.locator(".gallery-item").first).to_contain_text("a small red boat")
    page.locator(f'.gallery-item[data-job="{earlier}"]').focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#result-params').textContent.includes('Seed: 4242')")
    assert page.inner_text("#result-params").startswith("an earlier job from the API\n")
    page.click("#reuse")
    assert page.input_value("#prompt") == "an earlier job from the API"
    assert (page.input_value("#seed"), page.input_value("#steps")) == ("4242", "2")


def test_bad_input_is_shown_next_to_the_field(page):
    page.fill("#prompt", "too many steps")
    page.fill("#steps", "100000")
    page.click("#generate")
    page.wait_for_selector("#steps[aria-invalid=true]")
    assert "steps:" in page.inner_text("#form-errors")
    # The message stands beside the field, and the field points at it for screen readers.
    note = page.locator('.field-error[data-for="steps"]')
    assert f"steps: {note.inner_text()}" in page.inner_text("#form-errors") and "500" in note.inner_text()
    assert page.get_attribute("#steps", "aria-describedby") == "error-steps"
    assert [status.split()[0] for status in page.failed_responses] == ["422"]


def test_img2img_from_the_page(page, tmp_path):
    from PIL import Image

    picture = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (250, 220, 20)).save(picture)
    page.fill("#prompt", "a yellow field")
    page.fill("#steps", "4")
    page.set_input_files("#init_image", str(picture))
    page.fill("#denoising_strength", "0.5")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#progress-text').textContent === 'Done'", timeout=60_000)
    params = page.inner_text("#result-params")
    assert params.startswith("a yellow field\n") and "Denoising strength: 0.5" in params
    # A strength out of range is refused and marked on its field; the picture stays chosen.
    page.fill("#denoising_strength", "2")
    page.click("#generate")
    page.wait_for_selector("#denoising_strength[aria-invalid=true]")
    assert "denoising_strength:" in page.inner_text("#form-errors")
    assert [status.split()[0] for status in page.failed_responses] == ["422"]
