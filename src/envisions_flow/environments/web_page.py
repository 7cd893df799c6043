"""One MiniWob++ page in Chromium: an episode that starts from a clean state, and actions a person could do.

Clean state. A page is reused for the next episode of its task the way MiniWob++ itself (and
Synapse) restart episodes: in place, `Math.seedrandom(seed)` then `core.startEpisodeReal()`. The
task's page rebuilds its problem, but the browser keeps what a program left behind, so before the
restart everything a fresh load would not have is reset: the mouse leaves the page (nothing is
hovered), the document gets the focus back and its focused element is blurred, every scrolled
element is scrolled back, local and session storage are cleared, and (in `environments/web.py`,
under the clipboard lock) the clipboard is emptied before any program that copies or pastes.
Anything of the last episode still scheduled (a timer, an animation frame: an autocomplete about
to close, a fade still running) could change the new episode later, so when it does not run out
within SETTLE_MS the page is loaded afresh instead; timers are counted by an init script that runs
before the task's own scripts. The caller also compares the restarted page with the observation
the policy saw and loads afresh on any difference.

Actions. `click_xpath` and `movemouse` act on every element the xpath matches, in document order
(Synapse's API, which the paper's agents were written against: its social-media-all exemplar likes
every post of a user with one call); matches that are not rendered are skipped. An action first
waits (a bounded time) until the xpath matches a rendered element and no jQuery animation runs, so
a menu that appears 300 ms after typing is found. A click moves the mouse in steps to a point of the
target that `document.elementFromPoint` says is the target itself (or inside it), rests there as a
hand would so hover styles and handlers take effect, checks the point again, and presses; a
rendered target with no such point fails with `covered`. `click_option` selects the first matching
`<option>` of its `<select>` (Synapse's meaning); `click_xpath` on `<option>`s selects them all.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from envisions_flow.environments.web_actions import LIMIT, Action

# Error classes of the browser side (the interpreter's are in web_programs).
NOT_DONE = "not_done"          # the program ended before the episode did
TOO_SLOW = "too_slow"          # solved, but the time-decayed reward fell below the threshold
BAD_XPATH = "bad_xpath"
NO_ELEMENT = "no_element"      # the xpath matches nothing rendered within the wait (or nothing that can be acted on)
COVERED = "covered"            # the target is rendered, but another element covers every point of it
TIMEOUT = "timeout"
NAVIGATED = "navigated_away"
PAGE_CRASH = "page_crash"
BROWSER_CRASH = "browser_crash"

OUTSIDE = (-1, -1)  # where the mouse rests between episodes: over nothing, as on an untouched page
SETTLE_MS = 100     # how long a restart waits for the last episode's timers (a fade, jQuery's ticks) to run out

# Runs before the task's scripts in every document: counts the timers and animation frames still
# scheduled, each with the episode (epoch) that scheduled it; 0 is the page's own loading.
INIT_JS = """(() => {
  if (window.__envisions_pending) return;
  const pending = new Map();
  const native = {setTimeout: window.setTimeout, setInterval: window.setInterval, clearTimeout: window.clearTimeout,
                  clearInterval: window.clearInterval, requestAnimationFrame: window.requestAnimationFrame,
                  cancelAnimationFrame: window.cancelAnimationFrame};
  window.__envisions_epoch = 0;
  window.setTimeout = function (callback, delay, ...args) {
    let id;
    const run = function () {
      pending.delete('t' + id);
      return typeof callback === 'function' ? callback.apply(this, args) : (0, eval)(String(callback));
    };
    id = native.setTimeout.call(window, run, delay);
    pending.set('t' + id, window.__envisions_epoch);
    return id;
  };
  window.setInterval = function (...args) {
    const id = native.setInterval.apply(window, args);
    pending.set('t' + id, window.__envisions_epoch);
    return id;
  };
  window.clearTimeout = function (id) { pending.delete('t' + id); return native.clearTimeout.call(window, id); };
  window.clearInterval = function (id) { pending.delete('t' + id); return native.clearInterval.call(window, id); };
  window.requestAnimationFrame = function (callback) {
    let id;
    id = native.requestAnimationFrame.call(window, time => { pending.delete('f' + id); return callback(time); });
    pending.set('f' + id, window.__envisions_epoch);
    return id;
  };
  window.cancelAnimationFrame = function (id) { pending.delete('f' + id); return native.cancelAnimationFrame.call(window, id); };
  window.__envisions_pending = () => [...pending.values()].filter(epoch => epoch > 0).length;
})();"""

# End the open episode and reset what a fresh load would not have; false when something the last
# episode scheduled is still pending after `settleMs` (the caller loads the page afresh). Then seed the task's RNG,
# start the episode and hand out refs; the token marks this document and episode.
_START_JS = """async ([seed, token, settleMs]) => {
  window.focus();  // the document has the focus, as on a fresh load (a program may have tabbed out of it)
  if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
  core.endEpisode(0);
  for (const deadline = Date.now() + settleMs; window.__envisions_pending() > 0;) {
    if (Date.now() > deadline) return false;
    await new Promise(resolve => setTimeout(resolve, 5));
  }
  for (const element of document.querySelectorAll('*')) {
    if (element.scrollTop || element.scrollLeft) element.scrollTop = element.scrollLeft = 0;
  }
  window.scrollTo(0, 0);
  try { localStorage.clear(); sessionStorage.clear(); } catch (error) { /* no storage for this origin */ }
  window.__envisions_epoch += 1;
  Math.seedrandom(seed);
  core.startEpisodeReal();
  for (let i = 0; !WOB_TASK_READY; i++) {
    if (i > 200) throw new Error('envisions: the task did not become ready');
    await new Promise(resolve => setTimeout(resolve, 10));
  }
  core.getDOMInfo();
  window.__envisions_token = token;
  return true;
}"""

STATE_JS = """(token) => window.__envisions_token !== token ? null :
  {done: WOB_DONE_GLOBAL, reward: WOB_REWARD_GLOBAL, raw: WOB_RAW_REWARD_GLOBAL}"""

CLEAR_CLIPBOARD_JS = "() => navigator.clipboard.writeText('')"

# Shared by the action scripts: whether an element is rendered, and a point of it that is not covered.
_HELPERS = """
  const rendered = node => {
    if (node instanceof HTMLOptionElement) node = node.closest('select') || node;
    return node.isConnected && getComputedStyle(node).visibility !== 'hidden'
      && [...node.getClientRects()].some(box => box.width > 0 && box.height > 0);
  };
  const hits = (node, x, y) => { const hit = document.elementFromPoint(x, y); return !!hit && node.contains(hit); };
  // the point nearest the centre among a 5 x 5 grid of each box (in the viewport); failing that, among
  // all of it at pixel spacing (at most ~4,000 points a box), so a sliver left uncovered is found too
  const visiblePoint = node => {
    const boxes = [...node.getClientRects()].map(box => ({
      left: Math.max(box.left, 0), right: Math.min(box.right, window.innerWidth),
      top: Math.max(box.top, 0), bottom: Math.min(box.bottom, window.innerHeight),
    })).filter(box => box.right - box.left >= 1 && box.bottom - box.top >= 1);
    if (!boxes.length) return null;
    const centre = [(boxes[0].left + boxes[0].right) / 2, (boxes[0].top + boxes[0].bottom) / 2];
    const nearest = points => points.sort((a, b) => Math.hypot(a[0] - centre[0], a[1] - centre[1])
      - Math.hypot(b[0] - centre[0], b[1] - centre[1])).find(([x, y]) => hits(node, x, y)) || null;
    // whole pixels: a hit test (like the mouse event) rounds a fractional point
    const inside = ([x, y]) => boxes.some(box => box.left <= x && x < box.right && box.top <= y && y < box.bottom);
    const grid = [], fine = [];
    for (const box of boxes) {
      const width = box.right - box.left, height = box.bottom - box.top;
      for (const fy of [0.5, 0.3, 0.7, 0.15, 0.85]) {
        for (const fx of [0.5, 0.3, 0.7, 0.15, 0.85]) grid.push([Math.round(box.left + width * fx), Math.round(box.top + height * fy)]);
      }
      const step = Math.max(1, Math.round(Math.sqrt(width * height / 4000)));
      for (let y = Math.ceil(box.top); y < box.bottom; y += step) {
        for (let x = Math.ceil(box.left); x < box.right; x += step) fine.push([x, y]);
      }
    }
    return nearest(grid.filter(inside)) || nearest(fine);
  };
  const animating = () => !!window.jQuery && window.jQuery(':animated').length > 0;
  const pause = () => new Promise(resolve => setTimeout(resolve, 20));
  const describe = node => node ? node.tagName.toLowerCase() + (node.id ? '#' + node.id : '')
    + (node.getAttribute('data-wob_ref') ? '[data-wob_ref=' + node.getAttribute('data-wob_ref') + ']' : '') : 'nothing';
"""

# Wait until the xpath matches a rendered element and nothing animates; keep the matches for _AIM_JS.
_LOCATE_JS = """async ([xpath, timeoutMs]) => {""" + _HELPERS + """
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let result;
    try {
      result = document.evaluate(xpath, document, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null);
    } catch (error) {
      return {error: 'bad_xpath', message: String(error).slice(0, 200)};
    }
    const nodes = new Set();
    for (let i = 0; i < result.snapshotLength; i++) {
      const node = result.snapshotItem(i);
      const element = node instanceof Element ? node : node instanceof Attr ? node.ownerElement : node.parentElement;
      if (element) nodes.add(element);
    }
    const targets = [...nodes];
    if (targets.some(rendered) && !animating()) {
      window.__envisions_targets = targets;
      return {count: targets.length};
    }
    if (Date.now() > deadline) {
      return {error: 'no_element', message: (targets.length ? 'no element it matches is visible: ' : 'no element matches ')
        + xpath.slice(0, 200)};
    }
    await pause();
  }
}"""

# The point to press on target `index` (scrolled into view), {skip} when it is not rendered,
# {option} for an <option>, or `covered` when no point of it can be reached.
_AIM_JS = """async ([index, timeoutMs]) => {""" + _HELPERS + """
  const node = window.__envisions_targets[index];
  if (!node || !rendered(node)) return {skip: true};
  if (node instanceof HTMLOptionElement) return {option: true};
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (node.scrollIntoViewIfNeeded) node.scrollIntoViewIfNeeded(); else node.scrollIntoView();
    const point = animating() ? null : visiblePoint(node);
    if (point) return {x: point[0], y: point[1]};
    if (Date.now() > deadline) {
      const box = node.getBoundingClientRect();
      const cover = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
      return {error: 'covered', message: describe(node) + ' is covered by ' + describe(cover)};
    }
    await pause();
  }
}"""

# Rest on the point (as a hand does before pressing: hover styles and handlers take effect), then say
# whether it still belongs to target `index`.
_REST_JS = """async ([index, x, y, restMs]) => {""" + _HELPERS + """
  await new Promise(resolve => setTimeout(resolve, restMs));
  return hits(window.__envisions_targets[index], x, y);
}"""

# Select option `index` in its <select>, as a person choosing it from the list would leave it.
_SELECT_JS = """(index) => {
  const node = window.__envisions_targets[index];
  if (!(node instanceof HTMLOptionElement) || !node.closest('select')) return {error: 'no_element', message: 'not an <option>'};
  const select = node.closest('select');
  if (select.multiple) node.selected = true; else select.value = node.value;
  for (const type of ['input', 'change']) select.dispatchEvent(new Event(type, {bubbles: true}));
  return {};
}"""


class Failed(Exception):
    """An episode that ended with an error class (the page may still be usable)."""

    def __init__(self, error_class: str, message: str = ""):
        super().__init__(message or error_class)
        self.error_class = error_class


def classify(error: BaseException) -> Failed:
    """An error class for what Playwright raised on a page: it left the task, or it (or the browser) died."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "context was destroyed" in message or "navigat" in message.lower() or "detached" in message:
        return Failed(NAVIGATED, message)
    return Failed(PAGE_CRASH, message)


@dataclass(frozen=True)
class Hand:
    """How a person's hand paces the mouse: it moves in steps, rests on a target before pressing, holds the button."""

    move_steps: int = 3     # mouse-move events on the way to a target
    rest_s: float = 0.05    # on the target before pressing (hover styles and handlers take effect)
    press_s: float = 0.02   # between button down and up


async def start(page: Any, url: str, seed: int, expected: str, observe_js: str) -> str:
    """Open the episode, in place when the page shows this task, nothing of its last episode is
    pending and the restarted page renders exactly `expected`; else on a fresh load. The token."""
    token = secrets.token_hex(8)
    await page.mouse.move(*OUTSIDE)
    if expected and page.url.split("#")[0] == url:
        if await page.evaluate(_START_JS, [seed, token, SETTLE_MS]) and await page.evaluate(observe_js) == expected:
            return token
    await page.goto(url)
    if not await page.evaluate(_START_JS, [seed, token, 0]):
        raise Failed(PAGE_CRASH, "a freshly loaded page reports timers of an earlier episode")
    return token


class Performer:
    """Performs one program's actions on a page, counting the elements acted on."""

    def __init__(self, page: Any, hand: Hand, wait_s: float, max_elements: int,
                 episode_over: Callable[[], Awaitable[bool]]):
        self.page, self.hand, self.episode_over = page, hand, episode_over
        self.wait_ms = wait_s * 1000
        self.max_elements = max_elements  # elements acted on in all (one xpath may match many)
        self.elements = 0

    async def perform(self, action: Action) -> None:
        """One action with real mouse and keyboard input; a missing, hidden or covered target fails it."""
        if action.kind == "type":
            await self.page.keyboard.type(action.arg)
            return
        if action.kind == "press":
            await self.page.keyboard.press(action.arg)
            return
        located = await self.page.evaluate(_LOCATE_JS, [action.arg, self.wait_ms])
        if "error" in located:
            raise Failed(located["error"], located["message"])
        acted, count = 0, 1 if action.kind == "click_option" else located["count"]
        for index in range(count):
            aim = await self.page.evaluate(_AIM_JS, [index, self.wait_ms])
            if aim.get("skip"):
                continue
            if "error" in aim:
                raise Failed(aim["error"], aim["message"])
            self.elements += 1
            if self.elements > self.max_elements:
                raise Failed(LIMIT, f"acted on more than {self.max_elements} elements")
            if aim.get("option") or action.kind == "click_option":
                selected = await self.page.evaluate(_SELECT_JS, index)
                if "error" in selected:
                    raise Failed(selected["error"], selected["message"])
            else:
                await self.reach(index, aim)
                if action.kind == "click_xpath":
                    await self.page.mouse.down()
                    await asyncio.sleep(self.hand.press_s)
                    await self.page.mouse.up()
            acted += 1
            if index < count - 1 and await self.episode_over():  # the rest of the matches are not needed
                return
        if not acted:
            raise Failed(NO_ELEMENT, f"no element {action.arg[:200]} matches could be acted on")

    async def reach(self, index: int, aim: dict[str, Any]) -> None:
        """Move onto the target and rest; aim again once if resting there changed what is under the mouse."""
        for attempt in range(2):
            await self.page.mouse.move(aim["x"], aim["y"], steps=self.hand.move_steps)
            if await self.page.evaluate(_REST_JS, [index, aim["x"], aim["y"], self.hand.rest_s * 1000]):
                return
            if attempt == 0:
                aim = await self.page.evaluate(_AIM_JS, [index, self.wait_ms])
                if aim.get("skip"):
                    raise Failed(NO_ELEMENT, "the target went away under the mouse")
                if "error" in aim:
                    raise Failed(aim["error"], aim["message"])
        raise Failed(COVERED, "the target moves away from under the mouse")


# Utterance + HTML of #wrap and visible pop-ups, with live form values written out as attributes.
OBSERVE_JS = """() => {
  core.getDOMInfo();
  const skip = new Set(['reward-display', 'sync-task-cover', 'click-canvas']);
  const parts = [];
  for (const element of document.body.children) {
    if (skip.has(element.id) || ['SCRIPT', 'STYLE', 'LINK'].includes(element.tagName)) continue;
    const box = element.getBoundingClientRect(), style = getComputedStyle(element);
    if (element.id !== 'wrap' && (!box.width || !box.height || style.visibility === 'hidden')) continue;
    const copy = element.cloneNode(true);
    const live = [element, ...element.querySelectorAll('*')], copies = [copy, ...copy.querySelectorAll('*')];
    live.forEach((node, i) => {
      const out = copies[i];
      if (node instanceof HTMLInputElement) {
        if (node.type === 'checkbox' || node.type === 'radio') {
          node.checked ? out.setAttribute('checked', '') : out.removeAttribute('checked');
        } else {
          out.setAttribute('value', node.value);
        }
      } else if (node instanceof HTMLTextAreaElement) {
        out.textContent = node.value;
      } else if (node instanceof HTMLOptionElement) {
        node.selected ? out.setAttribute('selected', '') : out.removeAttribute('selected');
      }
      out.removeAttribute('data-wob_eps');
      out.removeAttribute('data-tampered');
    });
    copy.querySelectorAll('script, style').forEach(node => node.remove());
    parts.push(copy.outerHTML.replace(/\\s+/g, ' '));
  }
  return 'Instruction: ' + core.getUtterance() + '\\nHTML: ' + parts.join('\\n');
}"""
