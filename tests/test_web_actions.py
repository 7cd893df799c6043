"""How web actions are performed and how episodes start, on a purpose-built MiniWob-style page (MiniWob's
own core.js): clicks act on every rendered match, press on a point that is not covered, rest on the target
before pressing, wait a bounded time for an element to appear; an episode restarted in place starts from
what a fresh load has (nothing focused, hovered, scrolled or stored), and one whose predecessor left a timer
running is loaded afresh."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from envisions_flow.environments.base import Task
from envisions_flow.environments.web import (
    NOT_DONE,
    WebEnvironment,
    episode_id,
    miniwob_html_dir,
)
from envisions_flow.environments.web_page import COVERED, NO_ELEMENT
from envisions_flow.environments.web_programs import LIMIT

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                                                      reason="no /usr/bin/chromium (make setup installs it)")]

# Every button logs its id when clicked (into #log, which the observation after a program shows).
# `report` logs what the episode started from: the page's episode count (it grows only when the page
# is restarted in place), the scroll of a container that outlives episodes, and the stored value.
PAGE = """<!DOCTYPE html><html><head>
<link rel="stylesheet" type="text/css" href="../core/core.css">
<script src="../core/core.js"></script>
<style>
  #area { position: relative; height: 150px; }
  .abs { position: absolute; width: 40px; height: 20px; padding: 0; margin: 0; }
  #scroller { position: absolute; left: 0px; top: 230px; width: 60px; height: 30px; overflow-y: scroll; }
</style>
<script>
var episodes = 0, started = '';
var log = function(entry) { var out = document.getElementById('log'); out.textContent += entry + ';'; };
var button = function(id, left, top, extra) {
  return '<button class="abs ' + (extra || '') + '" id="' + id + '" style="left:' + left + 'px;top:' + top + 'px">'
    + id + '</button>';
};
var genProblem = function() {
  episodes += 1;
  started = 'episode=' + episodes + ',scroll=' + document.getElementById('scroller').scrollTop
    + ',stored=' + localStorage.getItem('key');
  document.getElementById('query').textContent = 'Actions.';
  var area = document.getElementById('area');
  area.innerHTML = '<div id="log"></div>'
    + button('m1', 0, 20, 'many') + button('m2', 45, 20, 'many')
    + button('m3', 90, 20, 'many').replace('style="', 'style="display:none;')
    + button('under', 0, 45) + '<div class="abs" id="cover" style="left:0px;top:45px;background:#eee"></div>'
    + button('half', 45, 45) + '<div class="abs" id="halfcover" style="left:45px;top:45px;width:28px;background:#eee"></div>'
    + button('rest', 90, 45) + button('reveal', 0, 70) + button('timer', 45, 70) + button('store', 90, 70)
    + button('report', 0, 95) + '<input id="field" class="abs" style="left:45px;top:95px">'
    + '<div id="zone" class="abs" style="left:100px;top:110px;width:55px;height:35px">zone</div>'
    + button('sliver', 0, 122) + '<div class="abs" style="left:1px;top:122px;background:#eee"></div>';
  area.querySelectorAll('button').forEach(function(b) { b.onclick = function() { log(b.id); }; });
  var entered = 0;
  document.getElementById('rest').onmouseenter = function() { entered = performance.now(); };
  document.getElementById('rest').onmousedown = function() { log(performance.now() - entered >= 40 ? 'rested' : 'hasty'); };
  document.getElementById('reveal').addEventListener('click', function() {
    setTimeout(function() { area.insertAdjacentHTML('beforeend', button('late', 90, 95)); document.getElementById('late').onclick = function() { log('late'); }; }, 600);
  });
  document.getElementById('timer').addEventListener('click', function() { setTimeout(function() { log('timer fired'); }, 5000); });
  document.getElementById('store').addEventListener('click', function() { localStorage.setItem('key', 'stored'); });
  document.getElementById('report').addEventListener('click', function() { log(started); });
  document.getElementById('zone').onmouseover = function() { log('zone hovered'); };
};
window.onload = function() { core.startEpisode(); };
</script></head>
<body><div id="wrap"><div id="query"></div><div id="area"></div>
<div id="scroller"><div style="height:200px"></div><button id="deep">deep</button></div></div></body></html>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, Task]:
    root = tmp_path_factory.mktemp("pages")
    (root / "core").symlink_to(miniwob_html_dir().parent / "core")
    (root / "miniwob").mkdir()
    (root / "miniwob" / "actions.html").write_text(PAGE)
    html_dir = root / "miniwob"
    [observation] = WebEnvironment(workers=1, html_dir=html_dir).observe([("actions", 1)])
    return html_dir, Task(episode_id("actions", 1), observation, "actions")


def _log(environment: WebEnvironment, task: Task, programs: list[str]) -> list[tuple[str, str]]:
    """(error class, what #log holds afterwards) of each program, run in this order on one page."""
    episodes = environment.run([task] * len(programs), programs, observe_after=True)
    logs = []
    for episode in episodes:
        found = re.search(r'<div id="log"[^>]*>(.*?)</div>', episode.observation)
        logs.append((episode.error_class, found.group(1) if found else ""))
    return logs


def test_clicks_act_on_every_rendered_match_press_uncovered_points_rest_and_wait(page):
    html_dir, task = page
    environment = WebEnvironment(workers=1, html_dir=html_dir, action_timeout_s=3.0)
    assert _log(environment, task, [
        "agent.click_xpath(\"//button[contains(@class, 'many')]\")",  # m3 is not rendered: skipped
        "agent.click_xpath(\"//button[@id='m3']\")",
        "agent.click_xpath(\"//button[@id='under']\")",                # entirely under #cover
        "agent.click_xpath(\"//button[@id='half']\")",                 # its left part is covered
        "agent.click_xpath(\"//button[@id='rest']\")",
        "agent.click_xpath(\"//button[@id='reveal']\")\nagent.click_xpath(\"//button[@id='late']\")",
        "agent.click_xpath(\"//button[@id='m1']/text()\")",          # a text node acts on its element
        "agent.click_xpath(\"//button[@id='sliver']\")",             # covered but for a 1 px column
    ]) == [(NOT_DONE, "m1;m2;"), (NO_ELEMENT, ""), (COVERED, ""), (NOT_DONE, "half;"), (NOT_DONE, "rested;rest;"),
           (NOT_DONE, "reveal;late;"), (NOT_DONE, "m1;"), (NOT_DONE, "sliver;")]
    # the wait is bounded: an element later than it is not there
    hasty = WebEnvironment(workers=1, html_dir=html_dir, action_timeout_s=0.05)
    assert _log(hasty, task, ["agent.click_xpath(\"//button[@id='reveal']\")\nagent.click_xpath(\"//button[@id='late']\")"]) \
        == [(NO_ELEMENT, "reveal;")]
    # every element acted on counts against max_actions
    assert _log(WebEnvironment(workers=1, html_dir=html_dir, max_actions=2), task, [
        "agent.click_xpath(\"//button[contains(@class, 'many')]\")\nagent.click_xpath(\"//button[@id='m1']\")"]) \
        == [(LIMIT, "m1;m2;")]


def test_an_episode_restarted_in_place_starts_as_a_fresh_page_and_one_after_a_running_timer_is_fresh(page):
    html_dir, task = page
    environment = WebEnvironment(workers=1, html_dir=html_dir)
    dirty = ("agent.click_xpath(\"//button[@id='store']\")\nagent.click_xpath(\"//button[@id='deep']\")\n"
             "agent.click_xpath(\"//input[@id='field']\")\nagent.movemouse(\"//div[@id='zone']\")")
    probe = "agent.type('typed')\nagent.click_xpath(\"//button[@id='report']\")"
    (_, left), (_, after_dirty), (_, after_timer_left), (_, after_timer) = _log(environment, task, [
        dirty, probe, "agent.click_xpath(\"//button[@id='timer']\")", probe])
    assert left == "store;zone hovered;"  # #deep is outside #area (it outlives episodes): not logged
    # in place (the page's second episode), yet nothing focused (the text went nowhere), hovered,
    # scrolled or stored
    assert after_dirty == "report;episode=2,scroll=0,stored=null;"
    field = environment.run([task], [dirty + "\n" + probe], observe_after=True)[0].observation
    assert 'value="typed"' in field  # typing into the field its own program focused works
    # the timer of the third episode (5 s) was still running when the fourth began: a fresh load (episode 1)
    assert after_timer == "report;episode=1,scroll=0,stored=null;" and after_timer_left == "timer;"
