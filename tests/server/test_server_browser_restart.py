"""The page survives a server restart in the middle of its job: it says the connection is lost, reconnects to
the server's event stream when the server is back, says so, and shows the job's picture when the resumed job
ends. The open page must not hold the stopping server up either."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from sdart.cli.serve import SHUTDOWN_GRACE_S

pytestmark = pytest.mark.browser


def test_a_server_restart_mid_job_is_survived(open_page, make_server):
    server = make_server(model="builtin:shapes").start()
    page = open_page(server.url + "/")
    page.fill("#prompt", "a red circle on a white background")
    # Four batches of 150 steps: long enough to outlast the shutdown grace (the worker runs on through it).
    page.fill("#steps", "150")
    page.fill("#n_iter", "4")
    page.fill("#seed", "5")
    page.click("#generate")
    page.wait_for_function("() => +document.querySelector('#progress').getAttribute('aria-valuenow') > 0",
                           timeout=30_000)
    job_id = server.client.get("/api/v1/queue").json()["jobs"][0]["id"]

    stopping = time.monotonic()
    server.stop()  # SIGTERM: the running job goes back to the queue, to resume at the next start
    assert time.monotonic() - stopping < SHUTDOWN_GRACE_S + 15, "an open page held the stopping server up"
    expect(page.locator("#connection")).to_have_text("Lost the connection to the server; reconnecting…")

    server.start()  # the same port and data folder
    expect(page.locator("#connection")).to_have_text("Reconnected: the server restarted; queued jobs carry on.",
                                                     timeout=30_000)
    page.wait_for_function("() => document.querySelector('#progress-text').textContent === 'Done'", timeout=90_000)
    job = server.job(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 2 and job["seeds"] == [5, 6, 7, 8]
    assert page.get_attribute("#result-image", "src") == job["images"][0]["url"]
    assert "Seed: 5" in page.inner_text("#result-params")
