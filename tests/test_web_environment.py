"""The web domain: the program interpreter (no browser) and MiniWob++ episodes in real headless Chromium."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from pathlib import Path

import pytest

from envisions_flow.environments.base import Task
from envisions_flow.environments.registry import make_environment
from envisions_flow.environments.sandbox import Limits
from envisions_flow.environments.web import WebEnvironment, episode_id, miniwob_html_dir, parse_episode_id
from envisions_flow.environments.web_prompts import ONE_SHOT
from envisions_flow.environments.web_page import (
    BAD_XPATH,
    BROWSER_CRASH,
    NAVIGATED,
    NO_ELEMENT,
    NOT_DONE,
    PAGE_CRASH,
    TIMEOUT,
)
from envisions_flow.environments.web_programs import (
    BAD_KEY,
    CPU_LIMIT,
    FORBIDDEN,
    LIMIT,
    NO_PROGRAM,
    RUNTIME,
    SYNTAX,
    TEXT_LIMIT,
    TOO_LARGE,
    Action,
    ProgramError,
    parse_program,
)
from envisions_flow.generation.base import Generation
from envisions_flow.stages.common import more_turns
from web_policy import ANY_SPEED

# ---- the interpreter ------------------------------------------------------------------------------


def test_interpreter_reads_loops_names_and_fstrings():
    program = (
        "# fill the form\nname = 'Ada'\ncount = 2\ncount += 1\n"
        "agent.click_xpath(\"//input[@id='tt']\")\n"
        "for _ in range(count):\n    agent.press('Backspace')\n"
        "agent.type(name + ' ' + str(count * 2) + f\" {len(name)}\")\n"
        "agent.press('command+a')\nagent.click_option(\"//option[text()='x']\")\nagent.movemouse('//span')\n"
    )
    assert parse_program(program) == [
        Action("click_xpath", "//input[@id='tt']"), Action("press", "Backspace"), Action("press", "Backspace"),
        Action("press", "Backspace"), Action("type", "Ada 6 3"), Action("press", "ControlOrMeta+a"),
        Action("click_option", "//option[text()='x']"), Action("movemouse", "//span"),
    ]


def test_interpreter_accepts_the_constructs_of_synapse_exemplars():
    """Conditional expressions, abs(), if/elif, // and % and f-string expressions (Synapse's search-engine,
    use-slider and use-spinner exemplars use them), lists to loop over, and Synapse's keyword names."""
    slider = ("delta = 3 - 7\nkey = 'arrowleft' if delta < 0 else 'arrowright'\n"
              "for _ in range(abs(delta)):\n    agent.press(key)\n")
    assert parse_program(slider) == [Action("press", "ArrowLeft")] * 4
    spinner = ("change = 2\nfor _ in range(abs(change)):\n    if change < 0:\n        agent.click_xpath('//a[2]')\n"
               "    elif change > 0:\n        agent.click_xpath('//a[1]')\n    else:\n        pass\n")
    assert parse_program(spinner) == [Action("click_xpath", "//a[1]")] * 2
    search = ("rank = 5\npage = (rank - 1) // 3\nslot = 3 if rank % 3 == 0 else rank % 3\n"
              "agent.click_xpath(f\"//ul/li[{page + 3}]/a\")\nagent.click_xpath(f\"//div[{slot}]/a\")")
    assert parse_program(search) == [Action("click_xpath", "//ul/li[4]/a"), Action("click_xpath", "//div[2]/a")]
    words = ("for word in ['ab', 'c d']:\n    agent.click_xpath(f\"//label[text()='{word}']\")\n"
             "names = ('x', 'y')\nagent.type(names[-1] + str(len(names)) + f'{3.14159:.2f}|{7:02d}' + str(max(4, 9)))\n"
             "agent.type(str(not 0 and 1 < 2 < 3 and 'z' in 'xyz'))\nagent.press(key_type='enter')")
    assert parse_program(words) == [
        Action("click_xpath", "//label[text()='ab']"), Action("click_xpath", "//label[text()='c d']"),
        Action("type", "y23.14|079"), Action("type", "True"), Action("press", "Enter")]


def test_source_that_python_warns_about_parses_silently():
    """`1if` and "\\d" are valid source that Python warns about as it parses (SyntaxWarning, DeprecationWarning):
    a policy writes them in thousands of samples, and each warning went to the job's log."""
    program = 'agent.type("\\d" + str(1if True else 2))'
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the parse
        assert parse_program(program) == [Action("type", "\\d1")]
        assert WebEnvironment(workers=1).program_key(program) == "agent.type('\\\\d' + str(1 if True else 2))"


def test_the_budget_stops_a_20000_character_program_and_an_expensive_one_at_once():
    """Issue 18: one 20,000-character program used 27 s of CPU in the job. Its size is refused before any
    work, and a program under the size limit that would evaluate ten million expressions stops at the
    evaluation budget; neither takes more than a fraction of a second."""
    def nested_loops(groups: int) -> str:  # 4,900 statements, each summing `groups` sums of 50 ones
        expression = "+".join("(" + "+".join(["1"] * 50) + ")" for _ in range(groups))
        return f"for _ in range(100):\n    for _ in range(49):\n        x = {expression}\nagent.type(str(x))"

    huge, costly = nested_loops(194), nested_loops(20)
    assert 19_800 < len(huge) <= 20_000
    for program, error_class in [(huge, TOO_LARGE), (costly, CPU_LIMIT)]:
        started = time.thread_time()
        with pytest.raises(ProgramError) as error:
            parse_program(program)
        assert error.value.error_class == error_class, str(error.value)
        assert time.thread_time() - started < 2.0  # was 27 s (generous: a loaded machine)
    # the CPU clock is checked too, whatever the counts say
    with pytest.raises(ProgramError, match="CPU time") as error:
        parse_program("agent.press('enter')\n" * 3, cpu_s=0.0)
    assert error.value.error_class == CPU_LIMIT


@pytest.mark.parametrize("program, error_class", [
    ("", NO_PROGRAM),
    ("# only a comment\nx = 1", NO_PROGRAM),
    ("agent.click_xpath('//a'", SYNTAX),
    ("import os\nagent.type('a')", FORBIDDEN),
    ("from os import system", FORBIDDEN),
    ("while True:\n    agent.press('enter')", FORBIDDEN),
    ("agent.page.goto('http://example.com')", FORBIDDEN),
    ("agent.browser.close()", FORBIDDEN),
    ("agent.evaluate('alert(1)')", FORBIDDEN),
    ("agent.type(''.join(['a']))", FORBIDDEN),
    ("agent.type(().__class__.__name__)", FORBIDDEN),
    ("__import__('os').system('true')", FORBIDDEN),
    ("agent.type(__import__('os').getcwd())", FORBIDDEN),
    ("open('/etc/passwd')", FORBIDDEN),
    ("print('hi')", FORBIDDEN),
    ("eval('1')", FORBIDDEN),
    ("def f():\n    agent.press('enter')\nf()", FORBIDDEN),
    ("while x:\n    agent.press('enter')", FORBIDDEN),
    ("f = agent.type\nf('a')", FORBIDDEN),
    ("agent = 1", FORBIDDEN),
    ("agent.type(2 ** 10)", FORBIDDEN),
    ("agent.type(lambda: 1)", FORBIDDEN),
    ("agent.type({'a': 1})", FORBIDDEN),
    ("agent.type([c for c in 'ab'])", FORBIDDEN),
    ("agent.type('ab'.upper())", FORBIDDEN),
    ("agent.type(f'{1:>1000000}')", FORBIDDEN),  # a format spec that would build a megabyte
    ("for i, x in [1, 2]:\n    agent.press('enter')", FORBIDDEN),
    ("for _ in range(10**9):\n    agent.press('enter')", FORBIDDEN),  # ** itself is refused
    ("for _ in range(1000000000):\n    pass", LIMIT),
    ("for _ in range(51):\n    agent.press('enter')", LIMIT),
    ("for _ in 'x' * 101:\n    agent.press('enter')", LIMIT),
    ("agent.type(str([1] * 101))", LIMIT),
    ("agent.type(str(10 * 1000000 * 1000000 * 1000000))", LIMIT),
    ("agent.type(str(round(5, -1000000000000)))", RUNTIME),  # would compute 10 ** 10 ** 12
    ("x = [1]\nfor _ in range(30):\n    x = [x, x]\nagent.type(str(x))", RUNTIME),  # nesting doubles str()
    ("for _ in range(100):\n    for _ in range(100):\n        x = 1", CPU_LIMIT),
    ("agent.type('a' * 1_000_000)", TEXT_LIMIT),
    ("agent.type(1_000_000 * 'ab')", TEXT_LIMIT),
    ("x = 'abc' * 300\nagent.type(x * 1000000000000)", TEXT_LIMIT),
    ("s = 'ab'\nfor _ in range(30):\n    s = s + s\nagent.type(s)", TEXT_LIMIT),
    ("x = 'a' * 999\nagent.type(f'" + "{x}" * 1000 + "')", TEXT_LIMIT),  # checked while joining
    ("x = 'a' * 999\nfor _ in range(100):\n    for _ in range(49):\n        y = x + 'b'\nagent.type(y)", TEXT_LIMIT),
    ("agent.type('" + "x" * 30_000 + "')", TOO_LARGE),
    ("agent.type(" + "-" * 300 + "1)", TOO_LARGE),
    ("x = " + "+".join(["1"] * 4000), TOO_LARGE),  # too deep for the parser itself
    ("x = " + "+".join("(" + "+".join(["1"] * 50) + ")" for _ in range(60)), TOO_LARGE),  # > 5,000 nodes
    ("agent.press('f5')", BAD_KEY),
    ("agent.press('alt+left')", BAD_KEY),
    ("agent.type(undefined_name)", RUNTIME),
    ("agent.type('a' - 1)", RUNTIME),
    ("agent.type(abs('a'))", RUNTIME),
    ("agent.type(['a'][3])", RUNTIME),
    ("agent.type('a' < 1)", RUNTIME),
    ("agent.click_xpath(path='//a')", RUNTIME),
    ("agent.type(1 // 0)", RUNTIME),
    ("agent.click_xpath(3)", RUNTIME),
    ("agent.click_xpath('//a', '//b')", RUNTIME),
])
def test_interpreter_refuses_with_the_right_error_class(program, error_class):
    with pytest.raises(ProgramError) as error:
        parse_program(program)
    assert error.value.error_class == error_class, str(error.value)


def test_max_actions_is_configurable():
    assert len(parse_program("for _ in range(5):\n    agent.press('enter')", max_actions=5)) == 5
    with pytest.raises(ProgramError) as error:
        parse_program("for _ in range(6):\n    agent.press('enter')", max_actions=5)
    assert error.value.error_class == LIMIT


def test_prompts_extraction_and_keys():
    environment = WebEnvironment()
    task = Task(episode_id("click-button", 3), "Instruction: Click on the \"ok\" button.\nHTML: <div></div>",
                "click-button")
    messages = environment.explore_prompt(task, few_shot=True)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert ONE_SHOT[0] in messages[0]["content"] and task.question in messages[2]["content"]
    assert environment.extract_program(messages[1]["content"]) == ONE_SHOT[1]
    assert environment.explore_prompt(task, few_shot=False)[-1] == messages[-1]
    refine = environment.refine_prompt(task, "agent.click_xpath('//button')")[0]["content"]
    assert task.question in refine and "agent.click_xpath('//button')" in refine
    assert environment.extract_program("I would click it.") == ""
    assert environment.extract_program("```python\nx = 'a'\nagent.type(x)\n```") == "x = 'a'\nagent.type(x)"
    assert environment.program_key("agent.type( 'a' )  # hi\n") == environment.program_key('agent.type("a")')
    assert parse_episode_id("click-button:12") == ("click-button", 12)
    with pytest.raises(ValueError):
        parse_episode_id("click-button")


def test_make_environment_reads_the_web_keys():
    settings = {"execution": {"timeout_s": 7, "memory_mb": 512, "workers": 3, "reward_threshold": 0.5,
                              "max_actions": 9, "max_turns": 2, "browser_relaunches": 0}}
    environment = make_environment("web", settings, {}, progress=False)
    assert isinstance(environment, WebEnvironment)
    assert (environment.limits.timeout_s, environment.workers, environment.reward_threshold,
            environment.max_actions, environment.max_turns, environment.browser_relaunches) == (7, 3, 0.5, 9, 2, 0)
    defaults = make_environment("web", {"execution": {"timeout_s": 7, "memory_mb": 512, "workers": 3}}, {})
    assert (defaults.reward_threshold, defaults.max_actions, defaults.max_turns, defaults.browser_relaunches) == \
        (0.8, 50, 1, 3)


# ---- real episodes in headless Chromium ---------------------------------------------------------------

browser = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                             reason="no /usr/bin/chromium (make setup installs it)")

EPISODES = [("click-button", 11), ("click-link", 12), ("enter-text", 7), ("click-checkboxes", 5),
            ("choose-date", 3), ("focus-text", 14), ("copy-paste", 5), ("choose-list", 8)]


@pytest.fixture(scope="module")
def tasks() -> dict[str, Task]:
    """Real observations, rendered like a data set would be."""
    observations = WebEnvironment(workers=2).observe(EPISODES)
    return {name: Task(episode_id(name, seed), text, name) for (name, seed), text in zip(EPISODES, observations)}


def _query(task: Task) -> str:
    return task.question.splitlines()[0].removeprefix("Instruction: ")


def _correct_and_wrong(task: Task) -> tuple[str, str]:
    """A hand-written solution for the episode, read off its observation, and a wrong program."""
    import re

    query, name = _query(task), task.answer
    quoted = re.findall(r'"([^"]+)"', query)
    if name == "click-button":
        return (f"agent.click_xpath(\"//button[text()='{quoted[0]}']\")",
                f"agent.click_xpath(\"//button[text()!='{quoted[0]}']\")")
    if name == "click-link":
        return (f"agent.click_xpath(\"//span[text()='{quoted[0]}']\")",
                f"agent.click_xpath(\"//span[@class='alink'][text()!='{quoted[0]}']\")")
    if name == "enter-text":
        fill = "agent.click_xpath(\"//input[@id='tt']\")\nagent.type({!r})\nagent.click_xpath(\"//button\")"
        return fill.format(quoted[0]), fill.format(quoted[0] + "x")
    if name == "click-checkboxes":
        wanted = [word.strip() for word in query.removeprefix("Select").split("and click")[0].split(",") if word.strip()]
        clicks = "".join(f"agent.click_xpath(\"//label[text()='{word}']/input\")\n" for word in wanted)
        return clicks + "agent.click_xpath(\"//button\")", clicks.splitlines()[0] + "\nagent.click_xpath(\"//button\")" \
            if len(wanted) > 1 else "agent.click_xpath(\"//button\")"
    if name == "choose-date":
        month, day, _ = re.search(r"(\d\d)/(\d\d)/(\d{4})", query).groups()
        back = 12 - int(month)  # the picker opens on December 2016 (maxDate)
        program = ("agent.click_xpath(\"//input[@id='datepicker']\")\n"
                   f"for _ in range({back}):\n    agent.click_xpath(\"//a[@title='Prev']\")\n"
                   f"agent.click_xpath(\"//a[text()='{int(day)}']\")\nagent.click_xpath(\"//button\")")
        return program, program.replace(f"text()='{int(day)}'", f"text()='{int(day) % 28 + 1}'")
    if name == "focus-text":
        return "agent.click_xpath(\"//input\")", "agent.click_xpath(\"//div[@id='query']\")"
    if name == "copy-paste":
        program = ("agent.click_xpath(\"//textarea\")\nagent.press('command+a')\nagent.press('command+c')\n"
                   "agent.click_xpath(\"//input\")\nagent.press('command+v')\nagent.click_xpath(\"//button\")")
        return program, program.replace("agent.press('command+v')\n", "agent.type('nothing')\n")
    if name == "choose-list":
        word = re.search(r"Select (.+) from the list", query).group(1)
        program = f"agent.click_option(\"//option[text()='{word}']\")\nagent.click_xpath(\"//button\")"
        return program, f"agent.click_option(\"//option[text()!='{word}']\")\nagent.click_xpath(\"//button\")"
    raise AssertionError(name)


@pytest.mark.browser
@browser
def test_observations_are_deterministic_and_show_the_page(tasks):
    again = WebEnvironment(workers=1).observe(EPISODES[::-1])[::-1]
    assert again == [tasks[name].question for name, _ in EPISODES]
    assert WebEnvironment().observe([("enter-text", 7)]) == [ONE_SHOT[0]]  # the worked example is real
    date = tasks["choose-date"].question
    assert date.startswith("Instruction: Select ") and 'id="datepicker"' in date and 'data-wob_ref="' in date
    assert "Massa amet maecenas varius." in tasks["copy-paste"].question  # a textarea's value is shown
    with pytest.raises(ValueError):
        WebEnvironment().observe([("no-such-task", 1)])


@pytest.mark.browser
@browser
def test_correct_programs_succeed_and_wrong_ones_fail(tasks):
    environment = WebEnvironment(workers=2, reward_threshold=ANY_SPEED)
    batch, programs = [], []
    for task in tasks.values():
        correct, wrong = _correct_and_wrong(task)
        batch += [task, task]
        programs += [correct, wrong]
    results = environment.execute(batch, programs)
    for task, program, result in zip(batch, programs, results):
        solved = program == _correct_and_wrong(task)[0]
        assert result.b == int(solved), (task.id, program, result)
        if solved:
            assert result.error_class == "" and result.value == "1"
        else:
            assert result.error_class in {"wrong_answer", NOT_DONE, NO_ELEMENT}, (task.id, result)
    # the reward is MiniWob's own: a threshold above any time-decayed reward fails the same programs
    strict = WebEnvironment(reward_threshold=1.0).execute(batch[:1], programs[:1])[0]
    assert (strict.b, strict.error_class, strict.value) == (0, "too_slow", "1")


@pytest.mark.browser
@browser
def test_page_errors_and_the_post_program_observation(tasks):
    environment = WebEnvironment(workers=2)
    date, button = tasks["choose-date"], tasks["click-button"]
    programs = [
        "agent.click_xpath(\"//input[@id='datepicker']\")",                               # opens the pop-up
        "agent.click_xpath(\"//input[@id='datepicker']\")\nagent.click_xpath(\"//a[text()='3']\")\n"
        "agent.click_xpath(\"//a[text()='4']\")",                                           # the picker closed
        "agent.click_xpath(\"//*[@data-wob_ref='999']\")",                                 # no such ref
        "agent.click_xpath(\"//button[\")",                                                 # not an xpath
        "agent.click_xpath(\"//*[@id='ui-datepicker-div']//a[text()='3']\")",             # hidden pop-up
        "agent.type('" + "x" * 1_000_000 + "')",                                            # 1 MB of text
    ]
    episodes = environment.run([date] * 5 + [button], programs, observe_after=True)
    classes = [episode.error_class for episode in episodes]
    assert classes == [NOT_DONE, NO_ELEMENT, NO_ELEMENT, BAD_XPATH, NO_ELEMENT, TOO_LARGE]
    opened = episodes[0].observation
    assert "ui-datepicker-div" in opened and "ui-datepicker-div" not in date.question
    assert opened.split("\nHTML: ")[0] == date.question.split("\nHTML: ")[0]
    assert episodes[0].raw_reward == 0 and episodes[5].raw_reward is None


class ScriptedPolicy:
    """A policy whose replies are given: the program of turn t is `programs[t]`. It implements the
    generation-backend calls `more_turns` makes and records the prompts it was shown."""

    def __init__(self, programs: list[str]):
        self.programs, self.prompts = programs, []

    def render(self, messages: list[dict[str, str]]) -> str:
        return "\n".join(f"<{m['role']}>{m['content']}" for m in messages)

    def greedy(self, prompts: list[str], max_new_tokens: int) -> list[Generation]:
        self.prompts += prompts
        turns = [prompt.count("<assistant>") for prompt in prompts]
        return [Generation(f"```python\n{self.programs[t]}\n```", (t + 1,) * 3, -(t + 1.0)) for t in turns]


@pytest.mark.browser
@browser
def test_with_more_turns_the_policy_sees_the_open_page_and_its_turns_replay_as_one_program(tasks):
    date = tasks["choose-date"]
    opening, *rest = _correct_and_wrong(date)[0].splitlines()
    finishing = "\n".join(rest)
    policy = ScriptedPolicy([opening, finishing, "agent.click_xpath('//button')"])
    environment = WebEnvironment(workers=1, max_turns=3, reward_threshold=ANY_SPEED)
    messages = environment.explore_prompt(date, few_shot=False)
    first = policy.greedy([policy.render(messages)], 64)
    [joined] = more_turns(environment, policy, [date], [messages], first, lambda more, turn: policy.greedy(more, 64))
    assert environment.extract_program(joined.text) == f"{opening}\n{finishing}"
    assert joined.token_ids == (1, 1, 1, 2, 2, 2) and joined.logprob_sum == -3.0 and joined.self_reward == -0.5
    # turn 2 was shown its own first program and the page it left (the picker open); the episode
    # then ended, so there was no third turn
    assert len(policy.prompts) == 2
    assert opening in policy.prompts[1] and "not finished" in policy.prompts[1]
    assert "ui-datepicker-div" in policy.prompts[1].split("not finished")[1] and "ui-datepicker-div" not in date.question
    [result] = environment.execute([date], [environment.extract_program(joined.text)])
    assert result.b == 1
    # one turn (the default): the first program is the answer, and it leaves the episode open
    single = WebEnvironment(workers=1)
    assert more_turns(single, policy, [date], [messages], first, policy.greedy) == first
    assert single.execute([date], [opening])[0].error_class == NOT_DONE


def _hostile_pages(root: Path) -> Path:
    """MiniWob-style pages (MiniWob's own core.js) that navigate away, hang, or solve."""
    (root / "core").symlink_to(miniwob_html_dir().parent / "core")
    pages = root / "miniwob"
    pages.mkdir()
    (pages / "elsewhere.html").write_text("<html><body>not a task</body></html>")
    (pages / "hostile.html").write_text("""<!DOCTYPE html><html><head>
<link rel="stylesheet" type="text/css" href="../core/core.css">
<script src="../core/core.js"></script>
<script>
var genProblem = function() {
  document.getElementById('query').textContent = 'Click ok.';
  document.getElementById('area').innerHTML =
    '<a id="away" href="elsewhere.html">away</a> <button id="hang">hang</button> <button id="ok">ok</button>' +
    ' <button id="popup">popup</button> <button id="oom">oom</button>';
  document.getElementById('ok').onclick = function() { core.endEpisode(1.0, true); };
  document.getElementById('hang').onclick = function() { while (true) {} };
  document.getElementById('popup').onclick = function() { window.open('elsewhere.html', '_blank'); };
  document.getElementById('oom').onclick = function() { const a = []; while (true) a.push(new Array(1e6).fill(1.5)); };
};
window.onload = function() { core.startEpisode(); };
</script></head>
<body><div id="wrap"><div id="query"></div><div id="area"></div></div></body></html>""")
    # a task whose episode takes 2.5 s to open, like a heavy page on a loaded machine (MiniWob's clock starts after)
    (pages / "slowstart.html").write_text((pages / "hostile.html").read_text().replace(
        "var genProblem = function() {", "var genProblem = function() {\n  const t = Date.now(); while (Date.now() - t < 2500) {}"))
    return pages


@pytest.mark.browser
@browser
def test_navigation_hangs_and_timeouts_fail_only_their_episode(tmp_path):
    # 2 s for the program: the fresh page after each failure is not counted (it once took a benign episode past
    # this limit on a loaded 2-core machine; test_the_episode_limit_counts_the_program_not_the_page_opening)
    environment = WebEnvironment(workers=1, html_dir=_hostile_pages(tmp_path), limits=Limits(timeout_s=2.0))
    task = Task(episode_id("hostile", 1), "", "hostile")
    ok, away, hang = ("agent.click_xpath(\"//button[@id='ok']\")", "agent.click_xpath(\"//a[@id='away']\")",
                      "agent.click_xpath(\"//button[@id='hang']\")")
    started = time.monotonic()
    results = environment.execute([task] * 4, [away, ok, hang, ok])  # one page: each failure is recycled
    assert [(r.b, r.error_class) for r in results] == [(0, NAVIGATED), (1, ""), (0, TIMEOUT), (1, "")]
    assert time.monotonic() - started < 60  # the hang is cut off (generous: a loaded machine loads pages slowly)
    # a stock task whose program outlasts the episode timeout
    slow = WebEnvironment(workers=1, limits=Limits(timeout_s=0.3))
    program = "agent.click_xpath(\"//input[@id='tt']\")\nfor _ in range(40):\n    agent.type('" + "a" * 500 + "')"
    started = time.monotonic()
    assert slow.execute([Task(episode_id("enter-text", 7), "", "enter-text")], [program])[0].error_class == TIMEOUT
    assert time.monotonic() - started < 30  # typing it all would take minutes


@pytest.mark.browser
@browser
def test_the_episode_limit_counts_the_program_not_the_page_opening(tmp_path):
    """A page that takes longer to open than the episode limit (a loaded machine, a heavy task) does not fail
    the program that runs on it; a program that hangs on that page is still cut off at the limit."""
    environment = WebEnvironment(workers=1, html_dir=_hostile_pages(tmp_path), limits=Limits(timeout_s=2.0))
    task = Task(episode_id("slowstart", 1), "", "slowstart")
    ok, hang = "agent.click_xpath(\"//button[@id='ok']\")", "agent.click_xpath(\"//button[@id='hang']\")"
    started = time.monotonic()
    results = environment.execute([task] * 3, [ok, hang, ok])  # fresh load, in-place restart, fresh page
    assert [(r.b, r.error_class) for r in results] == [(1, ""), (0, TIMEOUT), (1, "")]
    assert time.monotonic() - started < 60
    # the opening has its own bound, and says so
    impatient = WebEnvironment(workers=1, html_dir=environment.html_dir, page_open_timeout_s=1.0)
    with pytest.raises(RuntimeError, match=r"slowstart seed 1: timeout \(the page did not open in 1 s\)"):
        impatient.observe([("slowstart", 1)])
    assert impatient.execute([task], [ok])[0].error_class == TIMEOUT


@pytest.mark.browser
@browser
def test_a_popup_leaves_the_episode_working_and_a_crashed_page_fails_only_its_episode(tmp_path):
    # (that the popup page is also closed, by the context's "page" handler, is not visible from here)
    # a 64 MB JS heap: the page that allocates without end crashes its renderer
    environment = WebEnvironment(workers=1, html_dir=_hostile_pages(tmp_path), limits=Limits(timeout_s=20.0,
                                                                                            memory_mb=64))
    task = Task(episode_id("hostile", 1), "", "hostile")
    ok = "agent.click_xpath(\"//button[@id='ok']\")"
    popup_then_ok = "agent.click_xpath(\"//button[@id='popup']\")\n" + ok
    oom = "agent.click_xpath(\"//button[@id='oom']\")\n" + ok
    results = environment.execute([task] * 3, [popup_then_ok, oom, ok])  # one page, in this order
    assert [(r.b, r.error_class) for r in results] == [(1, ""), (0, PAGE_CRASH), (1, "")]


def _chromium_children() -> list[int]:
    """Chromium browser processes descending from this test process."""
    return [pid for pid, _ in _chromium_descendants()]


def _chromium_descendants(helpers: bool = False) -> list[tuple[int, bytes]]:
    """(pid, command line) of this test process's Chromium browsers, or of their helper processes."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = (int(fields[1]), (entry / "cmdline").read_bytes())
            except (OSError, IndexError):
                continue
    found = []
    for pid, (_, cmdline) in parents.items():
        ancestor = pid
        while ancestor in parents and ancestor != os.getpid():
            ancestor = parents[ancestor][0]
        if ancestor == os.getpid() and b"chromium" in cmdline and (b"--type=" in cmdline) == helpers:
            found.append((pid, cmdline))
    return found


def _renderers() -> int:
    """Renderer processes: one per open page, so the pages are up once there are `workers` of them."""
    return sum(b"--type=renderer" in cmdline for _, cmdline in _chromium_descendants(helpers=True))


def _kill_browser_after(episodes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill Chromium once `episodes` episodes have finished, counted on the call's progress bar: a count and
    not a delay, so the kill lands mid-call however fast or loaded the machine is."""
    import tqdm

    class KillingBar(tqdm.tqdm):
        finished = 0

        def update(self, n: float | None = 1) -> bool | None:
            KillingBar.finished += 1
            if KillingBar.finished == episodes:
                for pid in _chromium_children():
                    os.kill(pid, signal.SIGKILL)
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", KillingBar)


@pytest.mark.browser
@browser
def test_a_killed_browser_is_started_again_and_only_its_running_episodes_fail(tasks, monkeypatch):
    button = tasks["click-button"]
    _kill_browser_after(episodes=40, monkeypatch=monkeypatch)
    results = WebEnvironment(workers=2, reward_threshold=ANY_SPEED).execute([button] * 120,
                                                                     [_correct_and_wrong(button)[0]] * 120)
    failed = [r for r in results if not r.b]
    assert all(r.b for r in results[:39])  # the episodes before the kill
    assert 1 <= len(failed) <= 4  # the episodes the two pages were running (and a page opening)
    assert {r.error_class for r in failed} <= {BROWSER_CRASH, PAGE_CRASH} and BROWSER_CRASH in {r.error_class for r in failed}
    assert results[-1].b == 1  # the episodes after the crash ran in the new browser
    assert not _chromium_children()


@pytest.mark.browser
@browser
def test_without_restarts_a_killed_browser_fails_the_remaining_episodes_and_the_call_returns(tasks, monkeypatch):
    button = tasks["click-button"]
    _kill_browser_after(episodes=40, monkeypatch=monkeypatch)
    started = time.monotonic()
    results = WebEnvironment(workers=2, browser_relaunches=0, reward_threshold=ANY_SPEED).execute(
        [button] * 120, [_correct_and_wrong(button)[0]] * 120)
    assert time.monotonic() - started < 120
    solved = [r for r in results if r.b]
    failed = [r for r in results if not r.b]
    assert 39 <= len(solved) <= 41 and len(solved) + len(failed) == 120
    assert {r.error_class for r in failed} <= {BROWSER_CRASH, PAGE_CRASH}
    assert results[-1].error_class == BROWSER_CRASH
    assert not _chromium_children()


@pytest.fixture
def default_ctrl_c():
    """Python's own Ctrl-C handler: a library loaded by an earlier test (e.g. a trainer) may have replaced it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.browser
@browser
def test_keyboard_interrupt_closes_the_browser(tasks, default_ctrl_c):
    button = tasks["click-button"]
    def interrupt_when_running() -> None:
        deadline = time.monotonic() + 60
        while _renderers() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=interrupt_when_running)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        WebEnvironment(workers=2).execute([button] * 2000, [_correct_and_wrong(button)[0]] * 2000)
    timer.join()
    deadline = time.monotonic() + 10  # closing takes a moment on a loaded machine
    while _chromium_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _chromium_children()
