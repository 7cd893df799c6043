"""The pages episodes run on: `workers` pages of one headless Chromium, each program under a timeout,
pages and browsers that hang or die replaced, everything closed on every way out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from envisions_flow.environments.web_page import BROWSER_CRASH, INIT_JS, NAVIGATED, PAGE_CRASH, TIMEOUT, Failed, classify

log = logging.getLogger(__name__)

VIEWPORT = {"width": 500, "height": 320}  # MiniWob's window (miniwob.constants.WINDOW_*)

R = TypeVar("R")
J = TypeVar("J")


async def run_on_pages(jobs: list[J], one: Callable[[Any, J, Callable[[], None]], Awaitable[R]], *, desc: str,
                       chromium: str, flags: list[str], workers: int, timeout_s: float, setup_timeout_s: float,
                       relaunches: int, progress: bool) -> list[R | Failed]:
    """`one(page, job, begin)` for every job on `workers` pages of one browser. Until `one` calls `begin()`
    (its page is ready, the program starts), the job is under `setup_timeout_s`; from then on, under the
    episode's `timeout_s`.

    A page that times out, crashes or errors is closed and replaced; its job counts as failed.
    A browser that dies fails the episodes it was running (`browser_crash`) and is started
    again, up to `relaunches` times per call; after that the remaining jobs fail and the call
    returns. Every browser is closed on every way out (KeyboardInterrupt cancels this coroutine).
    """
    from playwright.async_api import async_playwright
    from tqdm import tqdm

    if not Path(chromium).exists():
        raise RuntimeError(f"no Chromium at {chromium}: `apt-get install -y chromium` (or `make setup`)")
    results: list[R | Failed | None] = [None] * len(jobs)
    pending = list(range(len(jobs)))[::-1]
    async with async_playwright() as playwright:
        browsers = _Browsers(lambda: playwright.chromium.launch(executable_path=chromium, args=flags), relaunches)
        try:
            await browsers.start()
        except Exception as error:  # noqa: BLE001 - nothing ran yet: a broken set-up, not a program's fault
            raise RuntimeError(f"cannot start Chromium ({chromium}): {str(error).splitlines()[0]}") from None
        try:
            with tqdm(total=len(jobs), desc=desc, unit="episode", disable=not progress) as bar:
                await asyncio.gather(*[_worker(browsers, jobs, pending, results, one, bar, timeout_s,
                                               setup_timeout_s)
                                       for _ in range(max(1, min(workers, len(jobs))))])
        finally:
            await browsers.close()
    return results  # type: ignore[return-value]

async def _worker(browsers: "_Browsers", jobs: list[J], pending: list[int], results: list, one: Callable, bar: Any,
                  timeout_s: float, setup_timeout_s: float) -> None:
    slot: list[Any] = []  # [browser, context, page] while this worker holds a usable page
    began: list[bool] = []  # the current job's program has started (its page opened)

    def begin(bound: asyncio.Timeout) -> None:
        began.append(True)
        bound.reschedule(asyncio.get_running_loop().time() + timeout_s)

    async def attempt(job: J, bound: asyncio.Timeout) -> Any:
        if not slot:
            browser = browsers.current
            context = await browser.new_context(viewport=VIEWPORT)
            slot.extend([browser, context])
            await context.add_init_script(INIT_JS)  # counts the timers an episode leaves (web_page)
            await context.grant_permissions(["clipboard-read", "clipboard-write"])
            page = await context.new_page()
            context.on("page", _close_popup)  # pop-ups a program opens are closed at once
            slot.append(page)
        return await one(slot[2], job, lambda: begin(bound))

    try:
        while pending:
            index = pending.pop()
            started = time.monotonic()
            began.clear()
            browser = slot[0] if slot else browsers.current
            try:
                if not browser.is_connected():
                    raise Failed(BROWSER_CRASH, "the browser is gone")
                async with asyncio.timeout(setup_timeout_s) as bound:
                    results[index] = await attempt(jobs[index], bound)
            except Exception as error:  # noqa: BLE001 - each becomes an error class
                failure = error if isinstance(error, Failed) else (
                    Failed(TIMEOUT, "episode timed out" if began else f"the page did not open in {setup_timeout_s:g} s")
                    if isinstance(error, TimeoutError) else classify(error))
                if not browser.is_connected():
                    failure = Failed(BROWSER_CRASH, "the browser is gone")
                failure.duration_s = time.monotonic() - started  # type: ignore[attr-defined]
                results[index] = failure
                # a page that hung, crashed or left the task (a navigation may still be in flight)
                # is replaced; one that only missed an element or an xpath is fine as it is
                if failure.error_class in {TIMEOUT, PAGE_CRASH, BROWSER_CRASH, NAVIGATED} or len(slot) < 3:
                    if slot:
                        await _close_quietly(slot[1])
                    slot.clear()
                if failure.error_class == BROWSER_CRASH:
                    await browsers.replace(browser)
            bar.update(1)
    finally:
        if slot:
            await _close_quietly(slot[1])


class _Browsers:
    """The browser the workers share, started again (a bounded number of times) when it dies."""

    def __init__(self, launch: Callable[[], Awaitable[Any]], relaunches: int):
        self._launch, self._relaunches_left = launch, relaunches
        self._lock = asyncio.Lock()
        self.all: list[Any] = []

    @property
    def current(self) -> Any:
        return self.all[-1]

    async def start(self) -> None:
        self.all.append(await self._launch())

    async def replace(self, dead: Any) -> None:
        """A new browser in place of `dead`, unless another worker already replaced it or none are left."""
        async with self._lock:
            if dead is not self.current or self.current.is_connected() or self._relaunches_left <= 0:
                return
            self._relaunches_left -= 1
            await _close_quietly(dead)
            try:
                await self.start()
            except Exception as error:  # noqa: BLE001 - the remaining jobs fail with browser_crash
                log.warning("could not start Chromium again: %s", str(error).splitlines()[0])
                self._relaunches_left = 0
            else:
                log.warning("Chromium died; started a new one (%d restart(s) left)", self._relaunches_left)

    async def close(self) -> None:
        for browser in self.all:
            await _close_quietly(browser, timeout_s=10)


def _close_popup(popup: Any) -> None:
    asyncio.ensure_future(_close_quietly(popup))


async def _close_quietly(target: Any, timeout_s: float = 5) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(target.close(), timeout_s)
