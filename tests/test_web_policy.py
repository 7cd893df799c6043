"""The scripted correct policy (tests/web_policy.py) on a fast subset of MiniWob++ tasks, and verdicts that are a
function of the task, the seed and the program alone: the same programs judged on fresh pages and on pages a
messy sibling used just before get the same verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import web_policy

from envisions_flow.environments.base import Task
from envisions_flow.environments.web import WebEnvironment, episode_id

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                                                      reason="no /usr/bin/chromium (make setup installs it)")]

# one task per kind of action: covering buttons, typing, focus, hover icons (every match), select/option,
# a multi-select that scrolls, checkboxes, the clipboard, a delayed menu, pagination, keys, a tree
SUBSET = ["click-test-2", "enter-password", "focus-text-2", "social-media-all", "choose-list", "click-scroll-list",
          "click-checkboxes", "copy-paste", "use-autocomplete", "search-engine", "use-slider", "navigate-tree"]
SEEDS = (7001, 7002)

# focus moved by the keyboard, text selected and copied, the mouse left over the page: state, not DOM
MESS = "agent.press('tab')\nagent.press('command+a')\nagent.press('command+c')\nagent.movemouse(\"//div[@id='area']\")"
# acts on whatever is focused, pasted or pressed: its verdict would follow the mess if state carried over
PROBE = "agent.type('x')\nagent.press('command+v')\nagent.press('space')\nagent.press('enter')"


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    episodes = [(name, seed) for name in SUBSET for seed in SEEDS]
    observations = WebEnvironment(workers=2).observe(episodes)
    return [Task(episode_id(name, seed), text, name) for (name, seed), text in zip(episodes, observations)]


def test_the_scripted_policy_solves_a_spread_of_tasks(tasks):
    programs = [web_policy.program(task.answer, task.question) for task in tasks]
    results = WebEnvironment(workers=2, reward_threshold=web_policy.ANY_SPEED).execute(tasks, programs)
    assert [(task.id, result.error_class) for task, result in zip(tasks, results)] == [(task.id, "") for task in tasks]


@pytest.mark.slow(seconds=40)  # no model: it starts the second worker while the first converts it
def test_verdicts_do_not_depend_on_what_ran_before_on_the_page(tasks):
    natural = {task.id: web_policy.program(task.answer, task.question) for task in tasks}
    # fresh: an empty expected observation always loads the page afresh
    fresh_tasks = [Task(task.id, "", task.answer) for task in tasks for _ in range(2)]
    fresh = WebEnvironment(workers=2, reward_threshold=web_policy.ANY_SPEED).run(
        fresh_tasks, [program for task in tasks for program in (natural[task.id], PROBE)])
    # after the mess, restarted in place on the same page (one worker, a task's episodes in a row)
    used = WebEnvironment(workers=1, reward_threshold=web_policy.ANY_SPEED).run(
        [task for task in tasks for _ in range(4)],
        [program for task in tasks for program in (MESS, natural[task.id], MESS, PROBE)])
    after_mess = [episode for index, episode in enumerate(used) if index % 2 == 1]
    assert [(episode.done, episode.error_class) for episode in after_mess] == \
        [(episode.done, episode.error_class) for episode in fresh]
    assert all(episode.error_class == "" for episode in fresh[::2])
