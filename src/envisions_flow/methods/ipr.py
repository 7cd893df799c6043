"""IPR (Iterative step-level Process Refinement, Xiong et al. 2024): step rewards, contrastive pairs, losses.

An outcome reward says a trajectory failed, not where. IPR locates the mistake: the current
agent takes its own action â_t after each expert prefix e_{t-1}, and a frozen scorer (the SFT
agent) estimates the step reward r_s of both a_t and â_t by Monte Carlo (paper Eq. 3-5) as the
mean final reward of N temperature-1 continuations, or the environment's reward when the action
ends the episode. Where â_t is worse by more than τ and the agent's episode ends worse than the
expert's, the expert suffix e_{t:n} is preferred to the agent's ê_{t:m} after the shared prefix
(step pairs, D_s); the agent's episode from scratch against the expert's gives outcome pairs
(D_t). Training mixes o-DPO (Eq. 7), s-DPO (Eq. 8) and SFT on the outcome winners (Eq. 9),
each an expectation over its own data set (Eq. 10). Environments are pure functions of (task,
actions) (`agents.StepEnvironment`), so a prefix is replayed, never regenerated.

Everything here is batched: one policy rollout for all (expert, t) starts, one scorer rollout
(N continuations each) for all candidate actions. Choices of our own:
- t = 1 makes the outcome pair only; a step pair there would repeat it with the same prefix (the
  task alone) in the s-DPO term. The authors' code (construct_preference_monte_carlo_*.py)
  likewise builds local pairs from prefixes of at least one step.
- Candidates with the same task, action history and action share one estimate: r_s(s_t, a_t) is
  a function of the state and the action, and an agent repeating the expert's action cannot make
  a pair from Monte Carlo noise alone.
- Reward margins within 1e-9 of τ count as τ: step rewards are means of N rewards, and float
  rounding must not decide the strict "> τ" (0.8 - 0.6 > 0.2 in floating point).

Where the authors' released code (github.com/WeiminXiong/IPR) differs from the paper, the paper is
the default and the code's choice is a config key (the workflow's `ipr.*`):
- learning rate: the scripts use 3e-6; the paper searched 1e-5 to 5e-5 (`ipr.learning_rate`).
- pair direction: the code also makes the reversed pair when the agent beat the expert by the
  same margins (`ipr.pairs: both_directions`, `contrastive_pairs(both_directions=True)`); the
  paper only prefers the expert. The code further applies a trajectory threshold (0.2) to the
  final-reward comparisons, which the paper does not have and which is not exposed here.
- SFT term: the code adds -log π(chosen) to every pair's loss, over D_t ∪ D_s; the paper's Eq. 9
  is over the outcome winners only (`ipr.sft_on: all_chosen | outcome_winners`).
- τ (`ipr.tau`): 0.01 WebShop, 0.1 InterCodeSQL, 0.5 ALFWorld in the paper; β (`ipr.beta`) 0.1-0.5;
  N (`ipr.mc_rollouts`) 5.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import pandas as pd

from envisions_flow.environments.base import Messages, StepEnvironment, Task
from envisions_flow.methods.agents import Start, Step, Trajectory, react_messages, rollout

if TYPE_CHECKING:
    import torch

OUTCOME, STEP = "outcome", "step"
SFT_ON = ("outcome_winners", "all_chosen")
_MARGIN_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Candidate:
    """An action a_t proposed after the prefix e_{t-1} of an episode of `task`."""

    task: Task
    prefix: tuple[Step, ...]
    observation: str  # what the actor saw before acting (the task's first observation at t = 1)
    thought: str
    action: str       # "" = unparsable: the episode ends there with reward 0, as in `agents.rollout`


def step_rewards(environment: StepEnvironment, scorer: Any, candidates: Sequence[Candidate], *, n_rollouts: int,
                 max_steps: int, max_new_tokens: int, seed: int = 0, few_shot: bool = False) -> list[float]:
    """Monte Carlo step reward r_s (paper Eq. 5) of every candidate, in candidate order.

    Each prefix + action is replayed in a fresh episode; an action that ends the episode (or
    takes its last allowed step) is worth the environment's reward, any other the mean final
    reward of `n_rollouts` temperature-1 continuations by the frozen `scorer`, all candidates
    in one rollout call.
    """
    if n_rollouts < 1:
        raise ValueError(f"n_rollouts must be at least 1, got {n_rollouts}")
    keys = [(c.task.id, tuple(step.action for step in c.prefix), c.action) for c in candidates]
    first: dict[tuple, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    distinct = [candidates[index] for index in first.values()]
    rewards = [0.0] * len(distinct)
    acting = [i for i, candidate in enumerate(distinct) if candidate.action]
    outcomes = environment.replay([distinct[i].task for i in acting],
                                  [[s.action for s in distinct[i].prefix] + [distinct[i].action] for i in acting]
                                  ) if acting else []
    starts, open_candidates = [], []
    for i, outcome in zip(acting, outcomes):
        candidate = distinct[i]
        if outcome.done or len(candidate.prefix) + 1 >= max_steps:
            rewards[i] = float(outcome.reward)
            continue
        taken = Step(candidate.observation, candidate.thought, candidate.action, float(outcome.reward), False, "")
        starts.append(Start(f"candidate{i}", candidate.task, candidate.prefix + (taken,), outcome.observation))
        open_candidates.append(i)
    if starts:
        continuations = rollout(environment, scorer, starts, greedy=False, max_steps=max_steps,
                                max_new_tokens=max_new_tokens, seed=seed, n=n_rollouts, few_shot=few_shot)
        for position, i in enumerate(open_candidates):
            finals = [c.final_reward for c in continuations[position * n_rollouts:(position + 1) * n_rollouts]]
            rewards[i] = sum(finals) / n_rollouts
    by_key = dict(zip(first, rewards))
    return [by_key[key] for key in keys]


def mean_step_rewards(environment: StepEnvironment, scorer: Any, trajectories: Sequence[Trajectory], *,
                      n_rollouts: int, max_steps: int, max_new_tokens: int, seed: int = 0,
                      few_shot: bool = False) -> list[float]:
    """Average step reward of each trajectory's own actions (the paper's Fig. 4); 0.0 without steps."""
    candidates, owners = [], []
    for index, trajectory in enumerate(trajectories):
        for t, step in enumerate(trajectory.steps):
            candidates.append(Candidate(trajectory.task, trajectory.steps[:t], step.observation, step.thought,
                                        step.action))
            owners.append(index)
    rewards = step_rewards(environment, scorer, candidates, n_rollouts=n_rollouts, max_steps=max_steps,
                           max_new_tokens=max_new_tokens, seed=seed, few_shot=few_shot)
    sums, counts = [0.0] * len(trajectories), [0] * len(trajectories)
    for owner, reward in zip(owners, rewards):
        sums[owner] += reward
        counts[owner] += 1
    return [total / count if count else 0.0 for total, count in zip(sums, counts)]


def explore_expert(environment: StepEnvironment, policy: Any, scorer: Any, experts: Sequence[Trajectory], *,
                   n_rollouts: int, max_steps: int, max_new_tokens: int, seed: int = 0,
                   few_shot: bool = False) -> list[dict[str, Any]]:
    """The agent explores along every expert trajectory (paper §3.3): one IPR_STEPS row per (expert, t).

    From each prefix e_{t-1} the policy takes its own action â_t at temperature 0 and finishes
    the episode greedily (ê); both a_t and â_t get Monte Carlo step rewards from `scorer`. The
    row of t = 1 holds the agent's whole episode from scratch, the outcome-level comparison.
    """
    starts, places = [], []
    for expert in experts:
        for t in range(1, min(len(expert.steps), max_steps) + 1):
            starts.append(Start(f"{expert.episode_id}@{t}", expert.task, expert.steps[:t - 1],
                                expert.steps[t - 1].observation))
            places.append((expert, t))
    agents = rollout(environment, policy, starts, greedy=True, max_steps=max_steps, max_new_tokens=max_new_tokens,
                     seed=seed, few_shot=few_shot)
    candidates = []
    for (expert, t), agent in zip(places, agents):
        prefix, observation = expert.steps[:t - 1], expert.steps[t - 1].observation
        for step in (expert.steps[t - 1], agent.steps[t - 1]):
            candidates.append(Candidate(expert.task, prefix, observation, step.thought, step.action))
    rewards = step_rewards(environment, scorer, candidates, n_rollouts=n_rollouts, max_steps=max_steps,
                           max_new_tokens=max_new_tokens, seed=seed, few_shot=few_shot)
    rows = []
    for index, ((expert, t), agent) in enumerate(zip(places, agents)):
        ours, theirs = expert.steps[t - 1], agent.steps[t - 1]
        rows.append({"task_id": expert.task.id, "episode_id": expert.episode_id, "t": t,
                     "expert_thought": ours.thought, "expert_action": ours.action,
                     "agent_thought": theirs.thought, "agent_action": theirs.action,
                     "expert_step_reward": rewards[2 * index], "agent_step_reward": rewards[2 * index + 1],
                     "expert_final_reward": expert.final_reward, "agent_final_reward": agent.final_reward,
                     "agent_steps": [_step_row(step) for step in agent.steps[t - 1:]]})
    return rows


def contrastive_pairs(environment: StepEnvironment, records: pd.DataFrame | Iterable[Mapping[str, Any]],
                      experts: Sequence[Trajectory], tau: float, both_directions: bool = False,
                      few_shot: bool = False) -> list[dict[str, Any]]:
    """IPR_PAIRS rows from `explore_expert` records: outcome pairs (D_t) and step pairs (D_s).

    Step pair at t >= 2: r_s(a_t) - r_s(â_t) > τ (strictly) and the agent's final reward below the
    expert's; the expert suffix e_{t:n} is chosen over ê_{t:m} after the prompt e_{t-1}. Outcome
    pair: the agent's episode from scratch ends below the expert's. `both_directions` (the
    authors' code) adds the mirrored pairs where the agent is the better one. Messages are the
    chat the agent sees (`agents.react_messages`); chosen and rejected continue the prompt.
    """
    by_id = {expert.episode_id: expert for expert in experts}
    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    pairs = []
    for row in frame.to_dict("records"):
        expert, t = by_id[row["episode_id"]], int(row["t"])
        expert_final, agent_final = float(row["expert_final_reward"]), float(row["agent_final_reward"])
        expert_step, agent_step = float(row["expert_step_reward"]), float(row["agent_step_reward"])
        if t == 1:
            kind, expert_wins, agent_wins = OUTCOME, agent_final < expert_final, agent_final > expert_final
        else:
            margin = expert_step - agent_step
            kind = STEP
            expert_wins = margin - tau > _MARGIN_TOLERANCE and agent_final < expert_final
            agent_wins = -margin - tau > _MARGIN_TOLERANCE and agent_final > expert_final
        if not (expert_wins or (both_directions and agent_wins)):
            continue
        expert_side = (expert.steps[t - 1:], expert_final, expert_step)
        agent_side = (steps_from_rows(row["agent_steps"]), agent_final, agent_step)
        chosen, rejected = (expert_side, agent_side) if expert_wins else (agent_side, expert_side)
        prefix = expert.steps[:t - 1]
        prompt = react_messages(environment, prefix, expert.steps[t - 1].observation, few_shot)
        pairs.append({"kind": kind, "task_id": expert.task.id, "episode_id": expert.episode_id, "t": t,
                      "prompt": prompt,
                      "chosen": react_messages(environment, prefix + tuple(chosen[0]), few_shot=few_shot)[len(prompt):],
                      "rejected": react_messages(environment, prefix + tuple(rejected[0]),
                                                 few_shot=few_shot)[len(prompt):],
                      "chosen_final_reward": chosen[1], "rejected_final_reward": rejected[1],
                      "chosen_step_reward": chosen[2], "rejected_step_reward": rejected[2]})
    return pairs


def steps_from_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[Step, ...]:
    """Steps of an `agent_steps` cell (lists of dicts, or the arrays Parquet gives back)."""
    return tuple(Step(str(r["observation"]), str(r["thought"]), str(r["action"]), float(r["reward"]),
                      bool(r["done"]), str(r["error_class"])) for r in rows)


def _step_row(step: Step) -> dict[str, Any]:
    return {"observation": step.observation, "thought": step.thought, "action": step.action,
            "reward": float(step.reward), "done": bool(step.done), "error_class": step.error_class}


def messages_from_cell(cell: Iterable[Mapping[str, Any]]) -> Messages:
    """Chat messages of a pair's prompt/chosen/rejected cell as plain dicts (Parquet gives arrays)."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in cell]


def loss_weights(kinds: Sequence[str], sft_on: str = "outcome_winners") -> list[tuple[float, float]]:
    """(DPO weight, SFT weight) of each example, so that a batch mean of weighted losses estimates Eq. 10.

    L = E_{D_t}[o-DPO] + E_{D_s}[s-DPO] + E[SFT] puts 1/|D_kind| on each example; the Trainer
    averages over a batch drawn uniformly from all M = |D_t| + |D_s| examples, so each weight is
    M/|D_kind|, which makes every batch an unbiased estimate of L. The SFT term covers the
    outcome winners (Eq. 9) or, with "all_chosen" (the authors' code), every chosen response.
    """
    if sft_on not in SFT_ON:
        raise ValueError(f"sft_on must be one of {SFT_ON}, got {sft_on!r}")
    unknown = set(kinds) - {OUTCOME, STEP}
    if unknown:
        raise ValueError(f"unknown pair kinds {sorted(unknown)}; expected {OUTCOME!r} or {STEP!r}")
    counts, total = Counter(kinds), len(kinds)
    weights = []
    for kind in kinds:
        if sft_on == "all_chosen":
            sft = 1.0
        else:
            sft = total / counts[OUTCOME] if kind == OUTCOME else 0.0
        weights.append((total / counts[kind], sft))
    return weights


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
             beta: float) -> torch.Tensor:
    """Per-example -log σ(β log π/π_ref(chosen) - β log π/π_ref(rejected)): o-DPO (Eq. 7) and s-DPO (Eq. 8).

    The two differ only in the data: log-probs are sums over the agent's own tokens of the
    chosen/rejected continuation (whole episode for o-DPO, the suffix after e_{t-1} for s-DPO).
    """
    import torch.nn.functional as F

    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)


def mixture_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                 reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
                 dpo_weights: torch.Tensor, sft_weights: torch.Tensor, beta: float) -> torch.Tensor:
    """The batch estimate of Eq. 10: mean of dpo_weight · DPO + sft_weight · (-log π(chosen)); see `loss_weights`."""
    dpo = dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta)
    return (dpo_weights * dpo - sft_weights * policy_chosen_logps).mean()
