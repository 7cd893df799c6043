"""Web agents on MiniWob++ in real headless Chromium, acting through Synapse-style programs.

Task encoding. A web task input is a MiniWob task name and a seed: `Task.id` is
`"{task}:{seed}"` and `Task.answer` is the task name. The policy, though, must see what
the page shows, so `Task.question` holds the rendered *observation*: the utterance and the
task's HTML (the `#wrap` subtree and any visible pop-up such as the date picker, with
`data-wob_ref` on every visible element and form values written out as attributes). The
observation is produced once, when the data set is prepared (`observe`, called by
`datasets.load_tasks` for `kind: miniwob`), by opening the episode in the browser; the
prompts are then plain functions of the Task, like in every other domain. This works
because an episode is a pure function of (task, seed): each one is opened on a freshly
loaded page, `Math.seedrandom(seed)` then `core.startEpisodeReal()` (MiniWob's own JS
API) generate the same problem, and `core.getDOMInfo()` hands out the same refs, so the
xpaths a program writes against the observation resolve at execution time.

Execution. A program is interpreted by `web_programs.parse_program` (never run as Python)
into a bounded list of actions, which Playwright replays with real mouse and keyboard
input on one page per worker of a single browser. The verdict is MiniWob's own:
`WOB_DONE_GLOBAL`, the time-decayed `WOB_REWARD_GLOBAL` (b = 1 when it is at least
`reward_threshold`) and `WOB_RAW_REWARD_GLOBAL` (carried in `Execution.value`, so raw
success can be reported too).

Turns. By default one program is the whole answer (`max_turns` = 1, the paper's
program-writing setting). With `max_turns` > 1 the stages that generate (explore, refine,
evaluate) show the policy the page after its program whenever the episode is still open
(`open_episodes`, `next_turn_prompt`) and let it write the next program; the turns are
joined into one program, which replays them exactly in a fresh episode of the same seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

from envisions_flow.environments.base import (
    CORRECT,
    WRONG_ANSWER,
    Execution,
    Messages,
    StepOutcome,
    Task,
    chat,
    extract_fenced,
)
from envisions_flow.environments.sandbox import Limits
from envisions_flow.environments.web_programs import Action, ProgramError, action_source, parse_program

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
# Offline-safe flags: no sandbox (we run as root in containers), no GPU, no background traffic.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]
VIEWPORT = {"width": 500, "height": 320}  # MiniWob's window (miniwob.constants.WINDOW_*)

# Error classes of the browser side (the interpreter's are in web_programs).
NOT_DONE = "not_done"          # the program ended before the episode did
TOO_SLOW = "too_slow"          # solved, but the time-decayed reward fell below the threshold
BAD_XPATH = "bad_xpath"
NO_ELEMENT = "no_element"      # the xpath matches nothing visible (or nothing that can be acted on)
TIMEOUT = "timeout"
NAVIGATED = "navigated_away"
PAGE_CRASH = "page_crash"
BROWSER_CRASH = "browser_crash"


def miniwob_html_dir() -> Path:
    """Where the `miniwob` package keeps the MiniWob++ task pages."""
    import miniwob

    return Path(miniwob.__file__).parent / "html" / "miniwob"


def episode_id(name: str, seed: int) -> str:
    return f"{name}:{seed}"


def parse_episode_id(task_id: str) -> tuple[str, int]:
    """(MiniWob task name, seed) from a web Task id."""
    name, _, seed = task_id.rpartition(":")
    if not name or not seed.isdigit():
        raise ValueError(f"web task id {task_id!r} is not '<miniwob task>:<seed>'")
    return name, int(seed)


INSTRUCTION = (
    "Complete the web task by writing a short Python program that controls the browser through `agent`: "
    "agent.click_xpath(xpath), agent.type(text) (into the focused element), agent.press(key) (enter, space, "
    "tab, backspace, arrowup, arrowdown, arrowleft, arrowright, command+a, command+c, command+v), "
    "agent.click_option(xpath) (an <option> of a <select>) and agent.movemouse(xpath). Visible elements carry "
    "a data-wob_ref attribute you can use in xpaths. Only agent calls, assignments, string and number "
    "expressions and `for _ in range(n)` loops are allowed. Reply with one ```python code block."
)

# One worked example for the cold-start prompt: enter-text, seed 7, as `observe` renders it.
ONE_SHOT = (
    'Instruction: Enter "Ignacio" into the text field and press Submit.\n'
    'HTML: <div id="wrap" data-wob_ref="2"> <div id="query">Enter "<span class="bold">Ignacio</span>" into the '
    'text field and press Submit.</div> <div id="area" data-wob_ref="3"> <div id="form" '
    'style="margin-left:10px;margin-top:18px;" data-wob_ref="4"> <input type="text" id="tt" data-wob_ref="5" '
    'value=""> <button id="subbtn" class="secondary-action" style="margin-top:6px;" data-wob_ref="6">Submit</button>'
    ' </div> </div> </div>',
    '# focus the text field, type the name, submit\n'
    'agent.click_xpath("//input[@id=\'tt\']")\nagent.type("Ignacio")\nagent.click_xpath("//button[@id=\'subbtn\']")',
)

REFINE_TEMPLATE = (
    "You are provided with a program that controls the browser to solve the given web task. You can either "
    "repair and refine it, or simply return the original program. Reply with one ```python code block that "
    "calls `agent`.\n\nThe task is:\n{question}\n\n"
    "The current program is:\n```python\n{program}\n```\n\nThe solution program is:"
)

# Step mode (agents.py, the IPR and synthetic-mixture runs): one agent call per step, the page after each.
STEP_INSTRUCTION = (
    "Complete the web task one action at a time. Reply with 'Thought: <reasoning>' and then 'Action: <one call>', "
    "where the call is one of agent.click_xpath(xpath), agent.type(text) (into the focused element), "
    "agent.press(key) (enter, space, tab, backspace, arrowup, arrowdown, arrowleft, arrowright, command+a, "
    "command+c, command+v), agent.click_option(xpath) (an <option> of a <select>) or agent.movemouse(xpath). "
    "Visible elements carry a data-wob_ref attribute you can use in xpaths. After each action you see the page."
)

# The step-mode worked episode (few-shot): ONE_SHOT's task in three steps, with the pages it shows.
STEP_EXAMPLE_STEPS = (
    ("The name goes into the text field, so I focus it first.", "agent.click_xpath(\"//input[@id='tt']\")",
     ONE_SHOT[0]),
    ("The field is focused; I type the name.", 'agent.type("Ignacio")', ONE_SHOT[0]),
    ("The field holds the name; I press Submit.", "agent.click_xpath(\"//button[@id='subbtn']\")",
     ONE_SHOT[0].replace('value=""', 'value="Ignacio"')),
)

NEXT_TURN = ("The program ran and the task is not finished yet. The page now shows:\n{observation}\n\n"
             "Write the next program, continuing from this page. Reply with one ```python code block.")

# End any open episode (so refs restart cleanly, as MiniWob's own reset does), seed the task's RNG,
# start the episode and hand out refs; the token marks this document and episode.
_START_JS = """async ([seed, token]) => {
  core.endEpisode(0);
  Math.seedrandom(seed);
  core.startEpisodeReal();
  for (let i = 0; !WOB_TASK_READY; i++) {
    if (i > 200) throw new Error('envisions: the task did not become ready');
    await new Promise(resolve => setTimeout(resolve, 10));
  }
  core.getDOMInfo();
  window.__envisions_token = token;
}"""

_STATE_JS = """(token) => window.__envisions_token !== token ? null :
  {done: WOB_DONE_GLOBAL, reward: WOB_REWARD_GLOBAL, raw: WOB_RAW_REWARD_GLOBAL}"""

# Utterance + HTML of #wrap and visible pop-ups, with live form values written out as attributes.
_OBSERVE_JS = """() => {
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

# Resolve an xpath in the page (not Playwright's injected engine: a locator costs ~40 ms per action):
# wait until the element is visible and no jQuery animation runs, then return its centre, or
# select it when it is an <option> (click_option). Errors come back as error classes.
_TARGET_JS = """async ([xpath, timeoutMs, option]) => {
  let node;
  try {
    node = document.evaluate(xpath, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;
  } catch (error) {
    return {error: 'bad_xpath', message: String(error).slice(0, 200)};
  }
  if (node && !(node instanceof Element)) node = node.parentElement;
  if (!node) return {error: 'no_element', message: 'no element matches ' + xpath.slice(0, 200)};
  if (option) {
    if (!(node instanceof HTMLOptionElement) || !node.parentElement) return {error: 'no_element', message: 'not an <option>'};
    const select = node.closest('select');
    if (select.multiple) node.selected = true; else select.value = node.value;
    for (const type of ['input', 'change']) select.dispatchEvent(new Event(type, {bubbles: true}));
    return {};
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (node.scrollIntoViewIfNeeded) node.scrollIntoViewIfNeeded(); else node.scrollIntoView();
    const box = node.getBoundingClientRect();
    const visible = box.width > 0 && box.height > 0 && getComputedStyle(node).visibility !== 'hidden';
    const animating = window.jQuery && window.jQuery(':animated').length > 0;
    if (visible && !animating) return {x: box.left + box.width / 2, y: box.top + box.height / 2};
    if (Date.now() > deadline) return {error: 'no_element', message: 'the element is not visible'};
    await new Promise(resolve => setTimeout(resolve, 20));
  }
}"""

_CLIPBOARD_KEYS = {"ControlOrMeta+c", "ControlOrMeta+x", "ControlOrMeta+v"}

R = TypeVar("R")
J = TypeVar("J")


@dataclass(frozen=True)
class Episode:
    """What one program did in one MiniWob episode."""

    done: bool
    reward: float | None      # MiniWob's time-decayed reward (None: the episode never reached a verdict)
    raw_reward: float | None  # without the time penalty
    error_class: str
    observation: str        # the page after the program, when asked for and the episode is still open
    duration_s: float


class _Failed(Exception):
    """An episode that ended with an error class (the page may still be usable)."""

    def __init__(self, error_class: str, message: str = ""):
        super().__init__(message or error_class)
        self.error_class = error_class


@dataclass
class WebEnvironment:
    """MiniWob++ tasks in headless Chromium, one page per worker, judged by MiniWob's reward."""

    limits: Limits = field(default_factory=lambda: Limits(timeout_s=10.0))
    workers: int = 2
    progress: bool = False
    reward_threshold: float = 0.8
    max_actions: int = 50
    max_turns: int = 1
    browser_relaunches: int = 3  # per call: a browser that dies is started again this many times
    action_timeout_s: float = 1.0
    html_dir: Path | None = None
    chromium: str = CHROMIUM
    domain: str = "web"
    step_instruction: str = STEP_INSTRUCTION
    # one browser clipboard for all pages: a copy ... paste program holds it for its whole run
    _clipboard: asyncio.Lock | None = field(default=None, init=False, repr=False)
    task_kinds = ("miniwob",)  # data it makes itself (episodes rendered in the browser), beside file and hub data
    fresh_seeds_kinds = ("miniwob",)  # with fresh_seeds, iteration i explores the i-th block of new episodes
    averaged_metrics = ("raw_success",)  # eval.json's average_raw_success beside the average accuracy

    # ---- configuration, data and metrics (environments/registry.py) -------------------------

    @classmethod
    def from_config(cls, domain: str, execution: Mapping[str, Any], options: Mapping[str, Any], dataset: Mapping[str, Any],
                    progress: bool) -> "WebEnvironment":
        from envisions_flow.environments.registry import execution_options

        return cls(reward_threshold=float(execution.get("reward_threshold", 0.8)),
                   max_actions=int(execution.get("max_actions", 50)), max_turns=int(execution.get("max_turns", 1)),
                   browser_relaunches=int(execution.get("browser_relaunches", 3)),
                   **execution_options(execution, progress), **options)

    @staticmethod
    def load_tasks(spec: dict[str, Any], key: str) -> Any:
        """`kind: miniwob`: episodes, each rendered once in the browser into its observation."""
        from envisions_flow.datasets.miniwob import miniwob_tasks

        return miniwob_tasks(spec, key)

    @staticmethod
    def check_tasks(spec: dict[str, Any], key: str, role: str) -> None:
        """Train and test episodes are disjoint because their seeds lie in the two splits' ranges."""
        from envisions_flow.datasets.loaders import DataError
        from envisions_flow.datasets.miniwob import miniwob_episodes

        miniwob_episodes(spec, key)
        wanted = "train" if role == "train" else "test"
        if spec.get("split", "train") != wanted:
            raise DataError(f"{key}.split: a miniwob {role} set takes split: {wanted} (its seeds would share the "
                            f"{'test' if wanted == 'train' else 'train'} range)")

    def exploration_unit(self, task_id: str) -> str:
        """What EA/STB count as one input: every iteration explores fresh episodes (new seeds), so the unit
        that can be solved again is the MiniWob task."""
        return parse_episode_id(task_id)[0]

    def testset_metrics(self, tasks: Sequence[Task], results: Sequence[Execution]) -> dict[str, Any]:
        return web_success(tasks, results)

    # ---- prompts and programs ---------------------------------------------------------------

    def explore_prompt(self, task: Task, few_shot: bool) -> Messages:
        examples = [(f"{INSTRUCTION}\n\n{ONE_SHOT[0]}", self.render_solution(ONE_SHOT[1]))] if few_shot else []
        return chat(examples, f"{INSTRUCTION}\n\n{task.question}")

    def refine_prompt(self, task: Task, program: str) -> Messages:
        content = REFINE_TEMPLATE.format(question=task.question, program=program.strip() or "# (no program)")
        return [{"role": "user", "content": content}]

    def extract_program(self, completion: str) -> str:
        text = extract_fenced(completion, "")  # the fenced block, else the bare completion
        return text if "agent." in text else ""

    def render_solution(self, program: str) -> str:
        return f"```python\n{program.strip()}\n```"

    def next_turn_prompt(self, messages: Messages, program: str, observation: str) -> Messages:
        """The conversation so far, the program just run, and the page it left open."""
        return messages + [{"role": "assistant", "content": self.render_solution(program)},
                           {"role": "user", "content": NEXT_TURN.format(observation=observation)}]

    def open_episodes(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[str]:
        """The page after each program where its episode is still open and nothing failed; "" elsewhere."""
        return [episode.observation if episode.error_class == NOT_DONE else ""
                for episode in self.run(tasks, programs, observe_after=True)]

    # ---- step mode (agents.StepEnvironment) ----------------------------------------------------

    @property
    def step_example(self) -> Messages:
        """A solved episode as conversation turns, shown first when rolling out few-shot."""
        from envisions_flow.methods.agents import Step, react_messages  # here: agents imports this package

        steps = [Step(observation, thought, action, 0.0, False, "") for thought, action, observation in STEP_EXAMPLE_STEPS]
        return react_messages(self, steps)

    def program_steps(self, program: str) -> list[str]:
        """A whole program (loops and variables unrolled) as step-mode actions, one agent call each."""
        return [action_source(action) for action in parse_program(program, self.max_actions)]

    def replay(self, tasks: Sequence[Task], histories: Sequence[Sequence[str]]) -> list[StepOutcome]:
        """Each history of agent calls as one program in a fresh episode of its task: the page after it.

        An episode is a pure function of (task, seed, actions), so replaying the prefix is how a
        step-mode episode continues. The reward is MiniWob's raw reward clipped to [0, 1]: replays
        take their own time, so the time-decayed reward would judge the replay, not the policy.
        A program the interpreter refuses or an action that fails ends the episode with its error class.
        """
        outcomes = []
        for episode in self.run(tasks, ["\n".join(history) for history in histories], observe_after=True):
            done = episode.error_class != NOT_DONE
            reward = min(1.0, max(0.0, episode.raw_reward or 0.0)) if episode.done else 0.0
            error_class = "" if episode.error_class in (TOO_SLOW, NOT_DONE) else episode.error_class
            outcomes.append(StepOutcome("" if done else episode.observation, reward, done, error_class))
        return outcomes

    def program_key(self, program: str) -> str:
        import ast

        try:
            return ast.unparse(ast.parse(program))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return "\n".join(line.rstrip() for line in program.strip().splitlines() if line.strip())

    # ---- the browser ------------------------------------------------------------------------

    def observe(self, episodes: Sequence[tuple[str, int]]) -> list[str]:
        """The observation (utterance + HTML) at the start of each (task name, seed) episode."""
        for name, _ in episodes:
            self._url(name)  # unknown task names fail before the browser starts

        async def one(page: Any, episode: tuple[str, int]) -> str:
            await self._start(page, *episode)
            return await page.evaluate(_OBSERVE_JS)

        results = asyncio.run(self._pool(list(episodes), one, "observing"))
        failed = [(episode, result) for episode, result in zip(episodes, results) if isinstance(result, _Failed)]
        if failed:
            (name, seed), error = failed[0]
            raise RuntimeError(f"could not open {len(failed)} MiniWob episode(s), e.g. {name} seed {seed}: "
                               f"{error.error_class} ({error})")
        return results

    def run(self, tasks: Sequence[Task], programs: Sequence[str], observe_after: bool = False) -> list[Episode]:
        """Each program in a fresh episode of its task; never raises for a program's or a page's fault."""
        episodes: list[Episode | None] = [None] * len(tasks)
        jobs: list[tuple[int, str, int, list[Action], str]] = []
        for index, (task, program) in enumerate(zip(tasks, programs)):
            name, seed = parse_episode_id(task.id)
            self._url(name)
            try:
                jobs.append((index, name, seed, parse_program(program, self.max_actions), task.question))
            except ProgramError as error:
                episodes[index] = Episode(False, None, None, error.error_class, "", 0.0)

        async def one(page: Any, job: tuple[int, str, int, list[Action], str]) -> Episode:
            return await self._episode(page, *job[1:4], observe_after, expected=job[4])

        jobs.sort(key=lambda job: (job[1], job[0]))  # a task's episodes in a row: pages restart in place
        results = asyncio.run(self._pool(jobs, one, "executing")) if jobs else []
        for (index, *_), result in zip(jobs, results):
            episodes[index] = (Episode(False, None, None, result.error_class, "", result.duration_s)
                               if isinstance(result, _Failed) else result)
        return episodes  # type: ignore[return-value]

    def execute(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[Execution]:
        return [Execution(int(episode.error_class == CORRECT),
                          None if episode.raw_reward is None else format(episode.raw_reward, "g"),
                          episode.error_class, episode.duration_s)
                for episode in self.run(tasks, programs)]

    # ---- one episode ------------------------------------------------------------------------

    def _url(self, name: str) -> str:
        path = (self.html_dir or miniwob_html_dir()) / f"{name}.html"
        if "/" in name or not path.is_file():
            raise ValueError(f"no MiniWob task {name!r} (no file {path})")
        return path.as_uri()

    async def _start(self, page: Any, name: str, seed: int, expected: str = "") -> str:
        """Open the episode: in place when the page already shows this task and the restarted
        episode renders exactly `expected` (the observation the policy saw), else on a fresh load.

        A fresh load is the definition of the episode (what `observe` shows); reusing the page
        saves the ~100 ms of CPU a load costs, and the check makes leftovers of earlier
        episodes (an open pop-up, a typed value) send the episode to a fresh page instead.
        """
        url, token = self._url(name), secrets.token_hex(8)
        if expected and page.url.split("#")[0] == url:
            await page.evaluate(_START_JS, [seed, token])
            if await page.evaluate(_OBSERVE_JS) == expected:
                return token
        await page.goto(url)
        await page.evaluate(_START_JS, [seed, token])
        return token

    async def _episode(self, page: Any, name: str, seed: int, actions: list[Action], observe_after: bool,
                       expected: str) -> Episode:
        started = time.monotonic()
        token = await self._start(page, name, seed, expected)
        error_class = ""
        uses_clipboard = any(action.kind == "press" and action.arg in _CLIPBOARD_KEYS for action in actions)
        async with self._clipboard if uses_clipboard and self._clipboard else contextlib.nullcontext():
            for action in actions:
                try:
                    await self._act(page, action)
                except _Failed as failure:
                    error_class = failure.error_class
                    break
                state = await self._state(page, token)
                if state["done"]:
                    break
        state = await self._state(page, token)
        reward, raw = float(state["reward"] or 0), float(state["raw"] or 0)
        if not error_class:
            if not state["done"]:
                error_class = NOT_DONE
            elif reward >= self.reward_threshold:
                error_class = CORRECT
            else:
                error_class = TOO_SLOW if raw >= 1 else WRONG_ANSWER
        observation = await page.evaluate(_OBSERVE_JS) if observe_after and not state["done"] else ""
        return Episode(bool(state["done"]), reward, raw, error_class, observation, time.monotonic() - started)

    async def _state(self, page: Any, token: str) -> dict[str, Any]:
        try:
            state = await page.evaluate(_STATE_JS, token)
        except Exception as error:  # noqa: BLE001 - the document went away under us
            raise _classify(error) from None
        if state is None:
            raise _Failed(NAVIGATED, "the page left the task")
        return state

    async def _act(self, page: Any, action: Action) -> None:
        """One action with real mouse and keyboard input; a missing or hidden target fails the episode."""
        try:
            if action.kind == "type":
                await page.keyboard.type(action.arg)
            elif action.kind == "press":
                await page.keyboard.press(action.arg)
            else:
                target = await page.evaluate(_TARGET_JS, [action.arg, self.action_timeout_s * 1000,
                                                          action.kind == "click_option"])
                if "error" in target:
                    raise _Failed(target["error"], target["message"])
                if action.kind == "click_xpath":
                    await page.mouse.click(target["x"], target["y"])
                elif action.kind == "movemouse":
                    await page.mouse.move(target["x"], target["y"])
        except _Failed:
            raise
        except Exception as error:  # noqa: BLE001 - Playwright's errors, classified below
            raise _classify(error) from None

    # ---- the pool of pages ------------------------------------------------------------------

    async def _pool(self, jobs: list[J], one: Callable[[Any, J], Awaitable[R]], desc: str) -> list[R | _Failed]:
        """`one(page, job)` for every job on `workers` pages of one browser, each under the episode timeout.

        A page that times out, crashes or errors is closed and replaced; its job counts as failed.
        A browser that dies fails the episodes it was running (`browser_crash`) and is started
        again, up to `browser_relaunches` times per call; after that the remaining jobs fail and
        the call returns. Every browser is closed on every way out (KeyboardInterrupt cancels
        this coroutine).
        """
        from playwright.async_api import async_playwright
        from tqdm import tqdm

        if not Path(self.chromium).exists():
            raise RuntimeError(f"no Chromium at {self.chromium}: `apt-get install -y chromium` (or `make setup`)")
        self._clipboard = asyncio.Lock()
        results: list[R | _Failed | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))[::-1]
        flags = CHROMIUM_FLAGS + [f"--js-flags=--max-old-space-size={self.limits.memory_mb}"]
        async with async_playwright() as playwright:
            browsers = _Browsers(lambda: playwright.chromium.launch(executable_path=self.chromium, args=flags),
                                 self.browser_relaunches)
            try:
                await browsers.start()
            except Exception as error:  # noqa: BLE001 - nothing ran yet: a broken set-up, not a program's fault
                raise RuntimeError(f"cannot start Chromium ({self.chromium}): {str(error).splitlines()[0]}") from None
            try:
                with tqdm(total=len(jobs), desc=desc, unit="episode", disable=not self.progress) as bar:
                    workers = [self._worker(browsers, jobs, pending, results, one, bar)
                               for _ in range(max(1, min(self.workers, len(jobs))))]
                    await asyncio.gather(*workers)
            finally:
                await browsers.close()
        return results  # type: ignore[return-value]

    async def _worker(self, browsers: "_Browsers", jobs: list[J], pending: list[int], results: list,
                      one: Callable, bar: Any) -> None:
        slot: list[Any] = []  # [browser, context, page] while this worker holds a usable page

        async def attempt(job: J) -> Any:
            if not slot:
                browser = browsers.current
                context = await browser.new_context(viewport=VIEWPORT)
                slot.extend([browser, context])
                page = await context.new_page()
                context.on("page", _close_popup)  # pop-ups a program opens are closed at once
                slot.append(page)
            return await one(slot[2], job)

        try:
            while pending:
                index = pending.pop()
                started = time.monotonic()
                browser = slot[0] if slot else browsers.current
                try:
                    if not browser.is_connected():
                        raise _Failed(BROWSER_CRASH, "the browser is gone")
                    # page creation counts too: it never returns if the browser dies under it
                    results[index] = await asyncio.wait_for(attempt(jobs[index]), self.limits.timeout_s)
                except Exception as error:  # noqa: BLE001 - each becomes an error class
                    failure = error if isinstance(error, _Failed) else (
                        _Failed(TIMEOUT, "episode timed out") if isinstance(error, TimeoutError) else _classify(error))
                    if not browser.is_connected():
                        failure = _Failed(BROWSER_CRASH, "the browser is gone")
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


def _classify(error: BaseException) -> _Failed:
    """An error class for what Playwright raised on a page: it left the task, or it (or the browser) died."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "context was destroyed" in message or "navigat" in message.lower() or "detached" in message:
        return _Failed(NAVIGATED, message)
    return _Failed(PAGE_CRASH, message)


def _close_popup(popup: Any) -> None:
    asyncio.ensure_future(_close_quietly(popup))


async def _close_quietly(target: Any, timeout_s: float = 5) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(target.close(), timeout_s)


def _raw_success(result: Execution) -> int:
    """MiniWob's raw reward (Execution.value) above 0: solved, however slowly (b also needs the time-decayed
    reward to reach the threshold)."""
    return int(result.value is not None and float(result.value) > 0)


def web_success(tasks: Sequence[Task], results: Sequence[Execution]) -> dict[str, Any]:
    """Raw success over the test set, and success per MiniWob task (paper Table 11; Task.answer = task name)."""
    per_task: dict[str, dict[str, Any]] = {}
    for task, result in zip(tasks, results):
        entry = per_task.setdefault(task.answer, {"n": 0, "correct": 0, "raw_correct": 0})
        entry["n"] += 1
        entry["correct"] += result.b
        entry["raw_correct"] += _raw_success(result)
    for entry in per_task.values():
        entry["success"] = entry["correct"] / entry["n"]
        entry["raw_success"] = entry["raw_correct"] / entry["n"]
    return {"raw_success": sum(_raw_success(result) for result in results) / len(results),
            "task_average": sum(entry["success"] for entry in per_task.values()) / len(per_task),
            "per_task": dict(sorted(per_task.items()))}
