"""The docs pages in a real browser (Debian's chromium through Playwright), with no network:
they render, and ask nothing of any other origin (every request is recorded and blocked)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Route, async_playwright

from tests.ops.servers import serve

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_INSTALLED = Path(CHROMIUM).exists()


async def test_docs_and_redoc_render_offline_and_ask_no_other_origin(tmp_path: Path) -> None:
    if not CHROMIUM_INSTALLED:
        pytest.fail("chromium is not installed (Debian: apt-get install -y chromium)")
    settings = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}", "cache_url": "none"}
    with serve(settings, log_dir=tmp_path, name="docs") as served:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox"]
            )
            try:
                page = await browser.new_page()
                outside: list[str] = []
                errors: list[str] = []

                async def only_the_service(route: Route) -> None:
                    if route.request.url.startswith(served.url + "/"):
                        await route.continue_()
                    else:
                        outside.append(route.request.url)
                        await route.abort()

                def keep_errors(message: ConsoleMessage) -> None:
                    if message.type == "error":
                        errors.append(message.text)

                await page.route("**/*", only_the_service)
                page.on("console", keep_errors)
                for path, title in (("/docs", "Swagger UI"), ("/redoc", "ReDoc")):
                    response = await page.goto(served.url + path, wait_until="networkidle")
                    assert response is not None
                    assert response.status == 200
                    policy = response.headers["content-security-policy"]
                    assert "default-src 'none'" in policy
                    assert title in await page.title()
                    # The UI has rendered the document: every resource's list operation shows.
                    body = await page.locator("body").inner_text()
                    for operation in ("/users", "/groups", "/permissions"):
                        assert operation in body, (path, operation)
            finally:
                await browser.close()
    assert outside == []
    assert errors == []
