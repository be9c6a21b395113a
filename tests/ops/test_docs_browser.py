"""The docs pages in a real browser (Debian's chromium through Playwright), with no network:
they render, and ask nothing of any other origin (every request is recorded and blocked)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Locator, Page, Route, async_playwright

from tests.conftest import TOKEN
from tests.ops.servers import serve

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_INSTALLED = Path(CHROMIUM).exists()


async def test_docs_and_redoc_render_offline_and_ask_no_other_origin(tmp_path: Path) -> None:
    """Both pages render the document offline; then, on /docs, Authorize with a token and
    Try it out: a GET of private fields with an include, a per-path `fields`, an operator
    filter and `explain=sql` (the SQL shows), and the example POST body."""
    if not CHROMIUM_INSTALLED:
        pytest.fail("chromium is not installed (Debian: apt-get install -y chromium)")
    settings = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}",
        "cache_url": "none",
        "api_tokens": TOKEN,
    }
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
                pages = (("/docs", "Swagger UI", ".opblock"), ("/redoc", "ReDoc", "h2"))
                for path, title, rendered in pages:
                    started = time.perf_counter()
                    response = await page.goto(served.url + path, wait_until="networkidle")
                    await page.locator(rendered).first.wait_for(timeout=30_000)
                    print(f"\n{path} rendered in {time.perf_counter() - started:.1f} s")
                    assert response is not None
                    assert response.status == 200
                    policy = response.headers["content-security-policy"]
                    assert "default-src 'none'" in policy
                    assert title in await page.title()
                    # The UI has rendered the document: every resource's list operation shows.
                    body = await page.locator("body").inner_text()
                    for operation in ("/users", "/groups", "/permissions"):
                        assert operation in body, (path, operation)
                    if path == "/redoc":  # its request samples show the example bodies
                        assert "correct horse battery staple" in body
                await page.goto(served.url + "/docs", wait_until="networkidle")
                await authorize(page, TOKEN)
                listed = await try_it_out(
                    page,
                    "list_users",
                    {
                        "fields": "id,email_address",
                        "include": "groups",
                        "fields[groups]": "name",
                        "filter[created][gte]": "2000-01-01T00:00:00Z",
                    },
                    choices={"explain": "sql"},
                )
                assert await status_of(listed) == "200", await body_of(listed)
                shown = await body_of(listed)
                assert "@example.com" in shown  # private: the token was sent
                assert '"explain"' in shown
                assert "SELECT" in shown
                created = await try_it_out(page, "create_users", {})  # the example body
                assert await status_of(created) == "201", await body_of(created)
                await page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
            finally:
                await browser.close()
    assert outside == []
    assert errors == []


async def authorize(page: Page, token: str) -> None:
    await page.click("button.authorize")
    await page.fill(".modal-ux input", token)
    await page.click(".modal-ux button.authorize")
    await page.click(".modal-ux button.btn-done")


async def try_it_out(
    page: Page,
    operation_id: str,
    parameters: dict[str, str],
    *,
    choices: dict[str, str] | None = None,
) -> Locator:
    """Open the operation, fill its parameters (and pick from its enum parameters' lists),
    execute; the operation's block."""
    block = page.locator(f"#operations-{operation_id.split('_', 1)[1]}-{operation_id}")
    await block.locator(".opblock-summary").click()
    await block.locator("button.try-out__btn").click()
    for name, value in parameters.items():
        await block.locator(f'tr[data-param-name="{name}"] input').fill(value)
    for name, value in (choices or {}).items():
        await block.locator(f'tr[data-param-name="{name}"] select').select_option(value)
    await block.locator("button.execute").click()
    await block.locator(".live-responses-table tbody .response-col_status").first.wait_for()
    return block


async def status_of(block: Locator) -> str:
    cell = block.locator(".live-responses-table tbody .response-col_status").first
    return (await cell.inner_text()).strip()


async def body_of(block: Locator) -> str:
    return await block.locator(".live-responses-table .microlight").first.inner_text()
