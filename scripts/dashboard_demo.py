"""A scripted demo of the live dashboard, and the screenshot in docs/dashboard.png.

    python scripts/dashboard_demo.py                         # 20 s of traffic, then a screenshot
    python scripts/dashboard_demo.py --duration 180 --screenshot docs/dashboard.png
    python scripts/dashboard_demo.py --keep                  # leave it running to look at

Everything on loopback: two upstreams in this process (`api`, flaky: every
third call answers 503 first; `legacy`, down: always 503), a real sidecar
process started by the real CLI on a fresh data dir, three routes
(`payments` with retries, `legacy` with a circuit breaker, `reports`
failing over from legacy to api), a steady trickle of calls through them
(rescued by retries and failover, charges in USD and EUR so rescued capital
shows); in the last seconds the legacy breaker opens, a call to legacy
fails with no rescue, and one background job fails (its call is refused
with a 400). Then headless Chromium (Debian's, via
selenium: `apt-get install chromium chromium-driver`) loads the dashboard
and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from aiohttp import web  # noqa: E402

from tests.support.browser import console_errors, new_chrome  # noqa: E402
from tests.support.cli import Cli, kill_leftover  # noqa: E402
from tests.support.upstream import Behaviour, Upstream, start_upstream  # noqa: E402

#: The last seconds of traffic, when the legacy route is called (and its breaker opens).
FINALE = 4.0


def flaky_api() -> Behaviour:
    """A behaviour for `api`: every third charge call a 503, refunds refused, callbacks taken."""
    calls = itertools.count(1)

    async def behave(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/hooks/"):
            return web.json_response({"received": True})
        if request.path.startswith("/v1/refunds"):
            return web.json_response({"error": {"type": "invalid_request"}}, status=400)
        if request.path.startswith("/v1/charges") and next(calls) % 3 == 0:
            return web.json_response({"error": "overloaded"}, status=503)
        return web.json_response({"id": "ch_demo", "object": "charge"})

    return behave


async def down(request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": "maintenance"}, status=503)


async def mirapi(cli: Cli, *args: str) -> None:
    done = await asyncio.to_thread(cli, *args)
    if done.returncode != 0:
        raise SystemExit(f"mirapi {' '.join(args)} failed: {done.stderr}")


async def traffic(sidecar: str, api: Upstream, legacy: Upstream, duration: float) -> None:
    """Calls through the routes for `duration` seconds; in the last seconds the legacy
    breaker opens, a call fails with no rescue, and a background job fails."""
    deadline = time.monotonic() + duration
    amounts = itertools.cycle([("usd", 2000), ("eur", 1250), ("usd", 4999), ("usd", 1500)])
    async with httpx.AsyncClient(base_url=sidecar, timeout=10) as http:
        while time.monotonic() < deadline:
            currency, amount = next(amounts)
            await http.post("/r/payments/v1/charges", json={"amount": amount, "currency": currency})
            await http.get("/r/payments/v1/charges/ch_demo")
            await http.get("/r/reports/v1/reports/daily")
            if deadline - time.monotonic() < FINALE:
                await http.get("/r/legacy/v1/status")  # 503s, then the breaker opens
            await asyncio.sleep(0.4)
        await http.get("/v1/export", headers={"X-Target-URL": legacy.url + "/v1/export"})
        job = await http.post(
            "/r/payments/v1/refunds",
            headers={"X-Webhook-Callback": api.url + "/hooks/refunds", "X-Retry-Count": "0"},
            json={"charge": "ch_demo", "amount": 500},
        )
        print(f"job accepted: {job.status_code}", file=sys.stderr)


def screenshot(url: str, path: Path, profile: Path) -> None:
    """Load the dashboard in headless Chromium and save a full-page screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = new_chrome(profile, width=1400, height=1000)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 15)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#events tbody tr"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#failed-jobs tbody tr"))
        time.sleep(1.5)  # one more poll, so every panel is as fresh as the events
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, int(height) + 20)
        time.sleep(0.5)
        driver.save_screenshot(str(path))
        errors = console_errors(driver)
        if errors:
            raise SystemExit(f"the page logged errors: {errors}")
    finally:
        driver.quit()


async def demo(duration: float, shot: Path | None, keep: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="mirapi-dashboard-demo-"))
    (work / "config.toml").write_text("")
    cli = Cli(work / "data", work / "config.toml")
    cli.env.pop("MIRAPI_MASTER_KEY", None)
    api, api_runner = await start_upstream()
    legacy, legacy_runner = await start_upstream()
    api.default = flaky_api()
    legacy.default = down
    try:
        state = await asyncio.to_thread(cli.start, "--allow-private")
        sidecar = str(state["address"])
        await mirapi(cli, "routes", "add", "payments", "--endpoint", api.url, "--retry", "2",
                     "--retry-delay", "20ms")
        await mirapi(cli, "routes", "add", "legacy", "--endpoint", legacy.url, "--retry", "0",
                     "--breaker-threshold", "3", "--breaker-cooldown", "10m")
        await mirapi(cli, "routes", "add", "reports", "--endpoint", legacy.url, "--endpoint",
                     api.url, "--retry", "0")
        await asyncio.sleep(1.0)  # the sidecar picks routes up within half a second
        await traffic(sidecar, api, legacy, duration)
        await asyncio.sleep(1.5)  # stats and events reach the store
        url = sidecar + "/_mirapi/ui"
        if shot is not None:
            await asyncio.to_thread(screenshot, url, shot, work / "chromium")
            print(f"screenshot: {shot}", file=sys.stderr)
        if keep:
            print(f"dashboard: {url}  (Ctrl-C to stop)", file=sys.stderr)
            await asyncio.Event().wait()
    finally:
        if cli.state_file.exists():
            await asyncio.to_thread(cli, "sidecar", "stop")
            kill_leftover(cli.state_file)
        await api_runner.cleanup()
        await legacy_runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of traffic")
    parser.add_argument("--screenshot", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--no-screenshot", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep serving after the demo")
    args = parser.parse_args()
    shot = None if args.no_screenshot else args.screenshot
    try:
        asyncio.run(demo(args.duration, shot, args.keep))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
