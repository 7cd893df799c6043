"""Web agents on MiniWob++ in real headless Chromium, acting through Synapse-style programs.

Task encoding. A web task input is a MiniWob task name and a seed: `Task.id` is
`"{task}:{seed}"` and `Task.answer` is the task name. The policy, though, must see what
the page shows, so `Task.question` holds the rendered *observation*: the utterance and the
task's HTML (the `#wrap` subtree and any visible pop-up such as the date picker, with
`data-wob_ref` on every visible element and form values written out as attributes). The
observation is produced once, when the data set is prepared (`observe`, called by
`datasets.load_tasks` for `kind: miniwob`), by opening the episode in the browser; the
prompts are then plain functions of the Task, like in every other domain. This works
because an episode is a pure function of (task, seed): it is opened on a freshly loaded page
(or on one restarted in place from the same clean state, `web_page`), `Math.seedrandom(seed)`
then `core.startEpisodeReal()` (MiniWob's own JS API) generate the same problem, and
`core.getDOMInfo()` hands out the same refs, so the xpaths a program writes against the
observation resolve at execution time.

Execution. A program is interpreted by `web_programs.parse_program` (never run as Python, under
a size, text and CPU budget) into a bounded list of actions, which `web_page` performs with
real mouse and keyboard input on one page per worker of a single browser: clicks act on every
element an xpath matches (Synapse's API), wait for it, and press where it is not covered. The
verdict is MiniWob's own: `WOB_DONE_GLOBAL`, the time-decayed `WOB_REWARD_GLOBAL` and
`WOB_RAW_REWARD_GLOBAL` (carried in `Execution.value`, so raw success can be reported too);
b = 1 when the raw reward is full (the task solved: MiniWob's checkbox tasks give a wrong
answer partial credit) and the time-decayed reward is at least `reward_threshold`. So a verdict
depends on the task, the seed and the program alone (and, through the time decay, on speed).

Turns. By default one program is the whole answer (`max_turns` = 1, the paper's
program-writing setting). With `max_turns` > 1 the stages that generate (explore, refine,
evaluate) show the policy the page after its program whenever the episode is still open
(`open_episodes`, `next_turn_prompt`) and let it write the next program; the turns are
joined into one program, which replays them exactly in a fresh episode of the same seed.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from envisions_flow.environments.web_page import (  # the browser's error classes, re-exported from here
    CLEAR_CLIPBOARD_JS,
    NAVIGATED,
    NOT_DONE,
    OBSERVE_JS,
    STATE_JS,
    TOO_SLOW,
    Failed,
    Hand,
    Performer,
    classify,
    start,
)
from envisions_flow.environments.web_pool import run_on_pages
from envisions_flow.environments.web_prompts import INSTRUCTION, NEXT_TURN, ONE_SHOT, REFINE_TEMPLATE, STEP_EXAMPLE_STEPS, STEP_INSTRUCTION
from envisions_flow.environments.web_actions import Action, ProgramError, action_source
from envisions_flow.environments.web_programs import parse_program, parse_source

CHROMIUM = "/usr/bin/chromium"
# Offline-safe flags: no sandbox (we run as root in containers), no GPU, no background traffic.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]


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
    action_timeout_s: float = 1.0  # how long an action waits for its element to be there
    # opening an episode's page (a fresh context, the task's load or restart): not the program's time, so not
    # in its limit, which a loaded machine passed before any action ran; bounded, as a dying browser never answers
    page_open_timeout_s: float = 60.0
    hand: Hand = field(default_factory=Hand)
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
        from envisions_flow.workflow.extras import require

        require("web", f"the {domain} domain (MiniWob++ in Chromium)")
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
            return ast.unparse(parse_source(program))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return "\n".join(line.rstrip() for line in program.strip().splitlines() if line.strip())

    # ---- the browser ------------------------------------------------------------------------

    def observe(self, episodes: Sequence[tuple[str, int]]) -> list[str]:
        """The observation (utterance + HTML) at the start of each (task name, seed) episode."""
        for name, _ in episodes:
            self._url(name)  # unknown task names fail before the browser starts

        async def one(page: Any, episode: tuple[str, int], begin: Callable[[], None]) -> str:
            await self._start(page, *episode)
            return await page.evaluate(OBSERVE_JS)

        results = asyncio.run(self._pool(list(episodes), one, "observing"))
        failed = [(episode, result) for episode, result in zip(episodes, results) if isinstance(result, Failed)]
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

        async def one(page: Any, job: tuple[int, str, int, list[Action], str], begin: Callable[[], None]) -> Episode:
            return await self._episode(page, *job[1:4], observe_after, expected=job[4], begin=begin)

        jobs.sort(key=lambda job: (job[1], job[0]))  # a task's episodes in a row: pages restart in place
        results = asyncio.run(self._pool(jobs, one, "executing")) if jobs else []
        for (index, *_), result in zip(jobs, results):
            episodes[index] = (Episode(False, None, None, result.error_class, "", result.duration_s)
                               if isinstance(result, Failed) else result)
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
        """Open the episode from a clean state (web_page.start): in place when that is safe and the
        restarted page renders exactly `expected` (the observation the policy saw), else on a fresh load.

        A fresh load is the definition of the episode (what `observe` shows); reusing the page
        saves the ~50 ms a load costs.
        """
        return await start(page, self._url(name), seed, expected, OBSERVE_JS)

    async def _episode(self, page: Any, name: str, seed: int, actions: list[Action], observe_after: bool,
                       expected: str, begin: Callable[[], None]) -> Episode:
        """The program's actions on a freshly started episode; its time limit starts once the page is ready."""
        started = time.monotonic()
        token = await self._start(page, name, seed, expected)
        begin()
        error_class = ""
        uses_clipboard = any(action.kind == "press" and action.arg in _CLIPBOARD_KEYS for action in actions)
        async with self._clipboard if uses_clipboard and self._clipboard else contextlib.nullcontext():
            if uses_clipboard:
                await page.evaluate(CLEAR_CLIPBOARD_JS)  # nothing an earlier episode copied is there to paste
            performer = Performer(page, self.hand, self.action_timeout_s, self.max_actions,
                                  lambda: self._over(page, token))
            for action in actions:
                try:
                    await performer.perform(action)
                except Failed as failure:
                    error_class = failure.error_class
                    break
                except Exception as error:  # noqa: BLE001 - Playwright's errors, classified below
                    raise classify(error) from None
                if await self._over(page, token):
                    break
        state = await self._state(page, token)
        reward, raw = float(state["reward"] or 0), float(state["raw"] or 0)
        if not error_class:
            if not state["done"]:
                error_class = NOT_DONE
            elif raw < 1:  # not solved; MiniWob's checkbox tasks give a wrong answer partial credit
                error_class = WRONG_ANSWER
            else:
                error_class = CORRECT if reward >= self.reward_threshold else TOO_SLOW
        observation = await page.evaluate(OBSERVE_JS) if observe_after and not state["done"] else ""
        return Episode(bool(state["done"]), reward, raw, error_class, observation, time.monotonic() - started)

    async def _over(self, page: Any, token: str) -> bool:
        return bool((await self._state(page, token))["done"])

    async def _state(self, page: Any, token: str) -> dict[str, Any]:
        try:
            state = await page.evaluate(STATE_JS, token)
        except Exception as error:  # noqa: BLE001 - the document went away under us
            raise classify(error) from None
        if state is None:
            raise Failed(NAVIGATED, "the page left the task")
        return state

    # ---- the pool of pages ------------------------------------------------------------------

    async def _pool(self, jobs: list[J], one: Callable[[Any, J, Callable[[], None]], Awaitable[R]],
                    desc: str) -> list[R | Failed]:
        """`one(page, job, begin)` for every job on `workers` pages of one browser (web_pool.run_on_pages)."""
        self._clipboard = asyncio.Lock()
        flags = CHROMIUM_FLAGS + [f"--js-flags=--max-old-space-size={self.limits.memory_mb}"]
        return await run_on_pages(jobs, one, desc=desc, chromium=self.chromium, flags=flags, workers=self.workers,
                                  timeout_s=self.limits.timeout_s, setup_timeout_s=self.page_open_timeout_s,
                                  relaunches=self.browser_relaunches, progress=self.progress)


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
