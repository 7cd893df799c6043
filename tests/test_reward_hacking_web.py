"""Reward hacking on the web: programs that try to get b = 1 without solving the MiniWob++ task get b = 0,
and correct programs written the natural ways get b = 1, in real Chromium on the package's task pages.

The tricks: using what a sibling sample left on the page or in the browser (the clipboard it copied to,
the field it focused, the text it typed), pressing where another element covers the target, and hedges
that act on every candidate at once. Where a hedge can be right (clicking every button is right when the
first button is the one asked for), the test computes from the observation when it is, and asserts b is
exactly that.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import web_policy

from envisions_flow.environments.base import Task
from envisions_flow.environments.web import WebEnvironment, episode_id, miniwob_html_dir
from envisions_flow.environments.web_page import COVERED

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                                                      reason="no /usr/bin/chromium (make setup installs it)")]

# click-test-2 seeds where button TWO covers the centre of ONE (checked from the observation below)
COVERED_SEEDS = [6, 34, 36, 43, 57, 74]
EPISODES = ([("copy-paste", seed) for seed in (41, 42, 43)] + [("enter-text", seed) for seed in (41, 42, 43)]
            + [("click-test-2", seed) for seed in COVERED_SEEDS]
            + [(name, seed) for name in ("click-button", "click-checkboxes", "click-option", "click-scroll-list",
                                         "social-media-all", "click-widget", "use-spinner", "focus-text-2")
               for seed in (41, 42, 43, 44)]
            + [("click-checkboxes-large", seed) for seed in range(41, 47)])


@pytest.fixture(scope="module")
def tasks() -> dict[tuple[str, int], Task]:
    observations = WebEnvironment(workers=2).observe(EPISODES)
    return {(name, seed): Task(episode_id(name, seed), text, name) for (name, seed), text in zip(EPISODES, observations)}


def _verdicts(pairs: list[tuple[Task, str]], workers: int = 1) -> list[int]:
    """b of each (task, program), run in this order (one worker: back to back on one page per task)."""
    return [result.b for result in
            WebEnvironment(workers=workers, reward_threshold=web_policy.ANY_SPEED).execute(*zip(*pairs))]


def _natural(task: Task) -> str:
    return web_policy.program(task.answer, task.question)


def test_what_a_sibling_left_in_the_browser_earns_nothing(tasks):
    copy, enter = [tasks["copy-paste", s] for s in (41, 42, 43)], [tasks["enter-text", s] for s in (41, 42, 43)]
    paste_only = ("agent.click_xpath(\"//input[@id='answer-input']\")\nagent.press('command+v')\n"
                  "agent.click_xpath(\"//button[@id='subbtn']\")")
    focus_only = "agent.click_xpath(\"//input[@id='tt']\")"
    def type_blind(task: Task) -> str:  # types without focusing the field
        return f"agent.type({web_policy.read(task.question).query.split(chr(34))[1]!r})\nagent.click_xpath(\"//button\")"
    from_history = "agent.click_xpath(\"//input[@id='tt']\")\nagent.press('arrowdown')\nagent.press('enter')\n" \
                   "agent.click_xpath(\"//button\")"  # the browser's form history of what a sibling typed
    pairs = []
    for task in copy:  # a sibling copied the text: pasting alone must not find it
        pairs += [(task, _natural(task)), (task, paste_only)]
    for task in enter:  # a sibling focused the field, or typed and submitted the answer
        pairs += [(task, focus_only), (task, type_blind(task)), (task, _natural(task)), (task, from_history)]
    assert _verdicts(pairs) == [1, 0] * 3 + [0, 0, 1, 0] * 3
    # two pages at once share the browser's clipboard: a paste waits for the copy to finish and still finds nothing
    linger = _natural(copy[0]).replace("agent.click_xpath(\"//button[@id='subbtn']\")",
                                       "for _ in range(10):\n    agent.movemouse(\"//div[@id='query']\")")
    assert _verdicts([(copy[0], linger), (copy[0], paste_only)] * 2, workers=2) == [0, 0] * 2


def _button_box(task: Task, button_id: str) -> tuple[int, int]:
    left, top = re.search(rf'id="{button_id}" style="position:absolute; left:(\d+)px; top:(\d+)px"', task.question).groups()
    return int(left), int(top)


def test_a_covered_point_is_never_pressed_and_a_visible_part_of_the_target_is(tasks, tmp_path):
    side = 40  # click-test-2's buttons are 40 px squares
    pairs = []
    for seed in COVERED_SEEDS:
        task = tasks["click-test-2", seed]
        (one_x, one_y), (two_x, two_y) = _button_box(task, "subbtn"), _button_box(task, "subbtn2")
        assert two_x <= one_x + side / 2 < two_x + side and two_y <= one_y + side / 2 < two_y + side  # TWO covers ONE's centre
        assert (one_x, one_y) != (two_x, two_y)  # but not all of it
        pairs += [(task, _natural(task)), (task, "agent.click_xpath(\"//button[text()='TWO']\")")]
    assert _verdicts(pairs) == [1, 0] * len(COVERED_SEEDS)
    # a target covered entirely is not pressed through: the cover (which would pay) is never clicked
    root = tmp_path / "pages"
    (root / "miniwob").mkdir(parents=True)
    (root / "core").symlink_to(miniwob_html_dir().parent / "core")
    (root / "miniwob" / "covered.html").write_text("""<!DOCTYPE html><html><head>
<link rel="stylesheet" type="text/css" href="../core/core.css"><script src="../core/core.js"></script>
<script>
var genProblem = function() {
  document.getElementById('query').textContent = 'Close the notice, then click Submit.';
  document.getElementById('area').innerHTML = '<button id="subbtn" style="position:absolute;left:10px;top:60px;width:60px;height:30px">Submit</button>'
    + '<div id="notice" style="position:absolute;left:0px;top:50px;width:100px;height:50px;background:#eee">notice <span id="close">x</span></div>';
  document.getElementById('subbtn').onclick = function() { core.endEpisode(1.0, true); };
  document.getElementById('notice').onclick = function() { core.endEpisode(1.0, true); };  // a judge pressing through pays
  document.getElementById('close').onclick = function(event) { event.stopPropagation(); document.getElementById('notice').remove(); };
};
window.onload = function() { core.startEpisode(); };
</script></head><body><div id="wrap"><div id="query"></div><div id="area" style="position:relative"></div></div></body></html>""")
    environment = WebEnvironment(workers=1, html_dir=root / "miniwob")
    task = Task(episode_id("covered", 1), environment.observe([("covered", 1)])[0], "covered")
    through, natural = environment.execute([task, task], ["agent.click_xpath(\"//button[@id='subbtn']\")",
                                                          "agent.click_xpath(\"//span[@id='close']\")\n"
                                                          "agent.click_xpath(\"//button[@id='subbtn']\")"])
    assert (through.b, through.error_class, natural.b) == (0, COVERED, 1)


def test_hedges_earn_only_what_a_person_acting_in_that_order_would(tasks):
    """Acting on every candidate at once: b is 1 exactly when the page's own rule credits that order."""
    pairs, expected = [], []
    for seed in (41, 42, 43, 44):
        page = {name: web_policy.read(tasks[name, seed].question) for name in
                ("click-button", "click-checkboxes", "click-option", "click-scroll-list", "social-media-all", "click-widget")}
        # every button: the first one pressed ends the episode
        buttons = [button.full_text for button in page["click-button"].root.all("button")]
        pairs.append((tasks["click-button", seed], "agent.click_xpath('//button')"))
        expected.append(int(buttons[0] == web_policy._quoted(page["click-button"].query)[0]))
        # every checkbox, then Submit: right only when all are asked for (a wrong box's partial credit is no credit)
        boxes = [label.full_text for label in page["click-checkboxes"].root.all("label")]
        asked = re.search(r"Select (.*) and click Submit", page["click-checkboxes"].query).group(1)
        pairs.append((tasks["click-checkboxes", seed], "agent.click_xpath(\"//input[@type='checkbox']\")\n"
                                                       "agent.click_xpath(\"//button[@id='subbtn']\")"))
        expected.append(int(sorted(boxes) == sorted(word.strip() for word in asked.split(","))))
        # every radio button: the last one stays selected
        radios = [label.full_text for label in page["click-option"].root.all("label")]
        pairs.append((tasks["click-option", seed], "agent.click_xpath(\"//input[@type='radio']\")\n"
                                                   "agent.click_xpath(\"//button[@id='subbtn']\")"))
        expected.append(int(radios[-1] == re.search(r"Select (.+) and click Submit", page["click-option"].query).group(1)))
        # every option of the scroll list
        options = [option.full_text for option in page["click-scroll-list"].root.all("option")]
        wanted = web_policy.click_scroll_list(page["click-scroll-list"]).split("\n")[0]
        pairs.append((tasks["click-scroll-list", seed], "agent.click_xpath('//option')\nagent.click_xpath('//button')"))
        expected.append(int(all(repr(option) in wanted for option in options)))
        # like every post, then Submit
        action, user = re.search(r'Click the "(\w+)" button on all posts by (\S+) and', page["social-media-all"].query).groups()
        users = [span.full_text for span in page["social-media-all"].root.all("span", class_="username")]
        pairs.append((tasks["social-media-all", seed], f"agent.click_xpath(\"//span[contains(@class, '{action.lower()}')]\")\n"
                                                        "agent.click_xpath(\"//button[text()='Submit']\")"))
        expected.append(int(set(users) == {user}))
        # every widget: the first one decides
        kinds = [node.attrs["data-type"] for node in page["click-widget"].root.all() if "data-type" in node.attrs]
        pairs.append((tasks["click-widget", seed], "agent.click_xpath('//*[@data-type]')"))
        expected.append(int(kinds[0] == web_policy._quoted(page["click-widget"].query)[0]))
    assert _verdicts(pairs, workers=2) == expected
    assert 0 < sum(expected) < len(expected)  # both kinds of seed are in the sample


def test_an_answer_with_one_wrong_box_is_wrong_though_miniwob_gives_it_partial_credit(tasks):
    """click-checkboxes-large pays (right boxes - wrong boxes) / boxes: one wrong box of twelve earns a raw 0.83,
    above the paper's 0.8. b needs the task solved (raw reward 1); a lower threshold shows it is not the time."""
    pairs, partial = [], []
    for seed in range(41, 47):
        task = tasks["click-checkboxes-large", seed]
        page = web_policy.read(task.question)
        boxes = [label.full_text for label in page.root.all("label")]
        asked = re.search(r"Select (.*) and click Submit", page.query).group(1)
        wanted = [] if asked == "nothing" else [word.strip() for word in asked.split(",")]
        extra = [box for box in boxes if box not in wanted][:1]
        if extra and len(pairs) < 3:
            pairs.append((task, "".join(f"agent.click_xpath(\"//label[text()='{word}']/input\")\n" for word in wanted + extra)
                          + "agent.click_xpath(\"//button[@id='subbtn']\")"))
            partial.append((len(boxes) - 2) / len(boxes))
    results = WebEnvironment(workers=2, reward_threshold=0.5).execute(*zip(*pairs))
    assert [(result.b, result.error_class) for result in results] == [(0, "wrong_answer")] * 3
    assert [float(result.value) for result in results] == pytest.approx(partial)
    assert min(partial) > 0.5


def test_correct_programs_written_the_natural_ways_are_credited(tasks):
    pairs = []
    for seed in (41, 42):
        button = tasks["click-button", seed]
        word = web_policy._quoted(web_policy.read(button.question).query)[0]
        ref = re.search(rf'data-wob_ref="(\d+)">{re.escape(word)}</button>', button.question).group(1)
        pairs += [(button, f"agent.click_xpath(\"//*[@data-wob_ref='{ref}']\")"),
                  (button, f"agent.click_xpath(xpath=\"//button[normalize-space(.)='{word}']\")"),
                  (button, f"label = '{word}'\nagent.click_xpath(f\"//button[text()='{{label}}']\")")]
        enter = tasks["enter-text", seed]
        text = web_policy._quoted(web_policy.read(enter.question).query)[0]
        pairs += [(enter, "agent.click_xpath(\"//input[@id='tt']\")\n"
                          f"for letter in {text!r}:\n    agent.type(letter)\n"
                          "agent.click_xpath(\"//button[@id='subbtn']\")"),
                  (enter, f"agent.click_xpath('//input')\nagent.type(characters={text!r})\nagent.click_xpath('//button')")]
        checkboxes = tasks["click-checkboxes", seed]
        asked = re.search(r"Select (.*) and click Submit", web_policy.read(checkboxes.question).query).group(1)
        words = [] if asked == "nothing" else [word.strip() for word in asked.split(",")]
        pairs += [(checkboxes, "".join(f"agent.click_xpath(\"//label[text()='{word}']\")\n" for word in words)
                   + "agent.click_xpath(\"//button[@id='subbtn']\")")]  # clicking a label ticks its box
        spinner = tasks["use-spinner", seed]
        pairs += [(spinner, _natural(spinner))]  # Synapse's shape: an offset, abs(), if/else
        focus = tasks["focus-text-2", seed]
        pairs += [(focus, _natural(focus)), (focus, _natural(focus).replace("(//div[@id='area']/input)", "(//input)"))]
    assert _verdicts(pairs, workers=2) == [1] * len(pairs)
