"""The teacher backend of distill-then-finetune: an OpenAI-compatible endpoint, answers cached on disk."""

from __future__ import annotations

import pytest

from envisions_flow.environments.base import Task
from envisions_flow.environments.math import MathEnvironment
from envisions_flow.generation.openai_backend import OpenAIChatBackend, TeacherError

pytestmark = pytest.mark.slow

TASKS = [Task("a", "Ava has 3 apples and gets 4 more. How many apples does she have?", "7"),
         Task("b", "A box holds 6 pens. How many pens are in 2 boxes?", "12")]


def _teacher(server, cache_dir, model="smollm2"):
    return OpenAIChatBackend(server["base_url"], model, cache_dir=cache_dir, concurrency=2, progress=False)


def test_teacher_answers_are_cached_and_never_paid_twice(teacher_server, tmp_path):
    environment = MathEnvironment()
    teacher = _teacher(teacher_server, tmp_path)
    prompts = [teacher.render(environment.explore_prompt(task, few_shot=True)) for task in TASKS]
    before = teacher_server["served"]["requests"]
    first = teacher.sample(prompts, 1, 48, seed=3)
    assert teacher.requests == 2 and teacher_server["served"]["requests"] == before + 2
    assert all(len(choices) == 1 and choices[0].n_tokens > 0 for choices in first)
    assert all(choices[0].self_reward < 0 for choices in first)

    again = _teacher(teacher_server, tmp_path)  # a resumed run: a new process, the same cache
    assert again.sample(prompts, 1, 48, seed=3) == first
    assert again.requests == 0 and teacher_server["served"]["requests"] == before + 2

    # a crash while appending leaves a cut line: only that request is made again
    lines = teacher.cache_path.read_text().splitlines()
    teacher.cache_path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    resumed = _teacher(teacher_server, tmp_path)
    assert resumed.sample(prompts, 1, 48, seed=3) == first and resumed.requests == 1


def test_teacher_errors_name_the_endpoint(teacher_server, tmp_path):
    teacher = _teacher(teacher_server, tmp_path, model="gpt-unknown")
    with pytest.raises(TeacherError, match=r"teacher 'gpt-unknown' at http://127\.0\.0\.1:\d+/v1: .*not found"):
        teacher.greedy([teacher.render([{"role": "user", "content": "hi"}])], 8)
