"""Web executor throughput: MiniWob episodes per second in headless Chromium (issue goal: >= 10/s on 2 cores).

Each episode runs one scripted single-action program (a correct click for click-test, click-button,
click-link, click-dialog and focus-text) in a fresh episode of its own seed. Observations are
prepared first, as the data set would be, and not timed.

Run: .venv/bin/python benchmarks/web_execution.py [--episodes 120] [--workers 1 2 4] [--repeat 3] [--hand instant]
Prints one JSON line per worker count and repetition, then the medians per worker count. Clicks are paced
as a person's (web_page.Hand: moves in 3 steps, rests 50 ms, holds the button 20 ms); `--hand instant` takes
the pacing out, to see what the rest of an episode (the clean restart, the checks) costs.
"""

from __future__ import annotations

import argparse
import re
import time

from common import emit, median_line, peak_rss_mb

from envisions_flow.environments.base import Task
from envisions_flow.environments.web import WebEnvironment, episode_id
from envisions_flow.environments.web_page import Hand


def program(name: str, observation: str) -> str:
    """The one click that solves the episode, read off its observation."""
    if name == "click-test":
        return "agent.click_xpath(\"//button\")"
    if name == "click-dialog":
        return "agent.click_xpath(\"//button[@title='Close']\")"
    if name == "focus-text":
        return "agent.click_xpath(\"//input\")"
    query = re.search(r'"([^"]+)"', observation.splitlines()[0])
    assert query is not None, observation
    word = query.group(1)
    tag = "button" if name == "click-button" else "span"  # click-link's links are spans
    return f"agent.click_xpath(\"//{tag}[text()='{word}']\")"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=120)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hand", choices=["person", "instant"], default="person")
    args = parser.parse_args()
    hand = Hand() if args.hand == "person" else Hand(move_steps=1, rest_s=0.0, press_s=0.0)
    names = ["click-test", "click-button", "click-link", "click-dialog", "focus-text"]
    episodes = [(names[i % len(names)], 1000 + i) for i in range(args.episodes)]
    observations = WebEnvironment(workers=2).observe(episodes)
    tasks = [Task(episode_id(name, seed), text, name) for (name, seed), text in zip(episodes, observations)]
    programs = [program(task.answer, task.question) for task in tasks]
    for workers in args.workers:
        environment = WebEnvironment(workers=workers, hand=hand)
        lines = []
        for repetition in range(args.repeat):
            started = time.perf_counter()
            results = environment.execute(tasks, programs)
            elapsed = time.perf_counter() - started
            lines.append(emit({
                "benchmark": "web_execution", "repetition": repetition, "episodes": len(tasks), "workers": workers,
                "hand": args.hand,
                "seconds": round(elapsed, 2), "episodes_per_s": round(len(tasks) / elapsed, 1),
                "solved": sum(result.b for result in results),
                "errors": sorted({result.error_class for result in results if result.error_class}),
                "peak_rss_mb": peak_rss_mb(),
            }))
        median_line(lines, "episodes_per_s", "seconds")

if __name__ == "__main__":
    main()
