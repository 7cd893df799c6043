"""Step mode: ReAct episodes (observation → thought + one action → next observation) for agent methods.

ENVISIONS writes a whole program per task; IPR and the synthetic-mixture method act one step
at a time. Any text environment takes part by implementing `StepEnvironment`: an
instruction and `replay`, which runs a history of actions in a fresh episode of the task and
reports what follows the last one. Being stateless is what makes IPR's Monte Carlo step
reward possible (restart from the expert's prefix e_{t-1}, same task, same seed) and keeps
rollouts batchable: every depth is one policy call and one environment call for all live
episodes. `docs/environments.md` walks through plugging in a new environment.

The conversation a policy sees (and is trained on) is

    user:      <step_instruction>\n\n<first observation>
    assistant: Thought: ...\nAction: ...
    user:      Observation:\n<next observation>
    ...
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from envisions_flow.environments.base import Messages, StepEnvironment, StepOutcome, Task

log = logging.getLogger(__name__)

# Error classes of step mode (environments add their own).
NO_ACTION = "no_action"      # the generation holds no parsable "Action:" line
STEP_LIMIT = "step_limit"    # max_steps actions taken and the episode is still open
# What the environment, not the policy, got wrong: the mixture paper drops such trajectories.
ENVIRONMENT_ERRORS = {"timeout", "page_crash", "browser_crash", "navigated_away"}


@dataclass(frozen=True)
class Step:
    """One action and what it led to."""

    observation: str   # what the agent saw when it acted (step 1: the task's first observation)
    thought: str
    action: str        # one action in the environment's action language ("" = unparsable generation)
    reward: float      # reward so far, after this action (the final reward in [0, 1] once done)
    done: bool         # the episode ended with this step (success, failure, error or step limit)
    error_class: str   # "" or why the episode ended badly


@dataclass(frozen=True)
class Trajectory:
    """An episode of one task as a sequence of steps."""

    episode_id: str
    task: Task
    steps: tuple[Step, ...]

    @property
    def final_reward(self) -> float:
        return self.steps[-1].reward if self.steps else 0.0

    @property
    def finished(self) -> bool:
        return bool(self.steps) and self.steps[-1].done


@dataclass(frozen=True)
class Start:
    """Where a rollout begins: a task, and optionally a prefix of steps already taken."""

    episode_id: str
    task: Task
    steps: tuple[Step, ...] = ()
    observation: str | None = None  # after the prefix; None: the task's question, or replayed


def render_step(thought: str, action: str) -> str:
    """The assistant turn of one step."""
    return f"Thought: {thought.strip()}\nAction: {action.strip()}"


_ACTION = re.compile(r"^[ \t]*Action[ \t]*:[ \t]*(.*)$", re.MULTILINE | re.IGNORECASE)
_THOUGHT = re.compile(r"^\s*Thought\s*:\s*", re.IGNORECASE)


def parse_step(completion: str) -> tuple[str, str]:
    """(thought, action) of a generated step; the action is "" when no "Action:" line holds one.

    The action is the rest of the first "Action:" line (a fenced or back-quoted action is
    unwrapped); the thought is the text before it, without its "Thought:" label.
    """
    match = _ACTION.search(completion)
    if not match:
        return _THOUGHT.sub("", completion.strip(), count=1).strip(), ""
    thought = _THOUGHT.sub("", completion[: match.start()].strip(), count=1).strip()
    action = match.group(1).strip()
    if not action:  # "Action:" alone on its line, the action (often fenced) below it
        rest = [line.strip() for line in completion[match.end():].splitlines()
                if line.strip() and not line.strip().startswith("```")]
        action = rest[0] if rest else ""
    return thought, action.strip("`").strip()


def observation_turn(observation: str) -> str:
    return f"Observation:\n{observation}"


def react_messages(environment: StepEnvironment, steps: Sequence[Step], next_observation: str | None = None,
                   few_shot: bool = False) -> Messages:
    """The conversation of `steps`; with `next_observation`, ending on the user turn that shows it.

    `few_shot` puts the environment's worked episode (`step_example`, when it has one) first:
    a small base model rarely keeps the Thought/Action format from the instruction alone.
    """
    observations = [step.observation for step in steps] + ([next_observation] if next_observation is not None else [])
    messages: Messages = list(getattr(environment, "step_example", ())) if few_shot else []
    for index, observation in enumerate(observations):
        content = f"{environment.step_instruction}\n\n{observation}" if index == 0 else observation_turn(observation)
        messages.append({"role": "user", "content": content})
        if index < len(steps):
            messages.append({"role": "assistant", "content": render_step(steps[index].thought, steps[index].action)})
    return messages


def rollout(environment: StepEnvironment, policy: Any, starts: Sequence[Start], *, greedy: bool, max_steps: int,
            max_new_tokens: int, seed: int = 0, n: int = 1, few_shot: bool = False, progress: bool = False
            ) -> list[Trajectory]:
    """Continue every start until its episode ends or it holds `max_steps` steps: n continuations per start.

    Results come in start order, start i's k-th continuation at i*n + k (episode id
    "<id>#<k>" when n > 1). `greedy` is temperature 0, else temperature-1 samples from
    `policy.sample` (seeded per depth); `few_shot` shows the environment's worked episode first.
    A start whose prefix already ended comes back as it is.
    """
    from tqdm import tqdm

    runs: list[list[Any]] = []  # [episode id, task, steps, next observation]
    for start in starts:
        observation = start.observation
        if observation is None and not start.steps:
            observation = start.task.question
        for k in range(n):
            runs.append([start.episode_id if n == 1 else f"{start.episode_id}#{k}", start.task, list(start.steps),
                         observation])
    missing = [run for run in runs if run[3] is None and not (run[2] and run[2][-1].done)]
    if missing:  # a prefix given without the observation after it: ask the environment
        outcomes = environment.replay([run[1] for run in missing], [[s.action for s in run[2]] for run in missing])
        for run, outcome in zip(missing, outcomes):
            run[3] = outcome.observation
    with tqdm(total=len(runs), desc="rollouts", unit="episode", disable=not progress) as bar:
        bar.update(sum(1 for run in runs if _ended(run[2], max_steps)))
        for depth in range(max_steps + 1):
            live = [run for run in runs if not _ended(run[2], max_steps)]
            if not live:
                break
            prompts = [policy.render(react_messages(environment, run[2], run[3], few_shot)) for run in live]
            if greedy:
                generations = policy.greedy(prompts, max_new_tokens)
            else:
                generations = [samples[0] for samples in policy.sample(prompts, 1, max_new_tokens, seed + 7_919 * depth)]
            parsed = [parse_step(generation.text) for generation in generations]
            acting = [i for i, (_, action) in enumerate(parsed) if action]
            outcomes = environment.replay([live[i][1] for i in acting],
                                          [[s.action for s in live[i][2]] + [parsed[i][1]] for i in acting])
            by_run = dict(zip(acting, outcomes))
            for i, (run, (thought, action)) in enumerate(zip(live, parsed)):
                outcome = by_run.get(i, StepOutcome("", 0.0, True, NO_ACTION))
                done, error_class = outcome.done, outcome.error_class
                if not done and len(run[2]) + 1 >= max_steps:
                    done, error_class = True, STEP_LIMIT
                run[2].append(Step(run[3], thought, action, float(outcome.reward), done, error_class))
                run[3] = outcome.observation
                if done:
                    bar.update(1)
    return [Trajectory(run[0], run[1], tuple(run[2])) for run in runs]


def _ended(steps: Sequence[Step], max_steps: int) -> bool:
    return bool(steps) and (steps[-1].done or len(steps) >= max_steps)


def trajectory_rows(trajectories: Sequence[Trajectory]) -> list[dict[str, Any]]:
    """Rows of the TRAJECTORIES schema: one per step."""
    return [{"episode_id": trajectory.episode_id, "task_id": trajectory.task.id, "step": index + 1,
             "observation": step.observation, "thought": step.thought, "action": step.action,
             "reward": float(step.reward), "done": bool(step.done), "error_class": step.error_class}
            for trajectory in trajectories for index, step in enumerate(trajectory.steps)]


def trajectories_from_frame(frame: pd.DataFrame, tasks: Mapping[str, Task] | None = None) -> list[Trajectory]:
    """Trajectories of a TRAJECTORIES table, in first-appearance order of their episode ids.

    Without `tasks`, a task is rebuilt from its id and its first observation (all the step
    environments here read), with an empty answer.
    """
    trajectories = []
    for episode_id, rows in frame.sort_values("step", kind="stable").groupby("episode_id", sort=False):
        rows = rows.sort_values("step", kind="stable")
        steps = tuple(Step(row.observation, row.thought, row.action, float(row.reward), bool(row.done),
                           row.error_class) for row in rows.itertuples())
        task_id = rows["task_id"].iloc[0]
        task = tasks[task_id] if tasks is not None else Task(task_id, steps[0].observation, "")
        trajectories.append(Trajectory(str(episode_id), task, steps))
    order = {episode_id: index for index, episode_id in enumerate(dict.fromkeys(frame["episode_id"]))}
    return sorted(trajectories, key=lambda trajectory: order[trajectory.episode_id])
