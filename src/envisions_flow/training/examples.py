"""Training examples: prompt/completion pairs rendered with the policy's chat template, as at sampling time.

L1 (U1) and L2 (U2) examples differ only in their prompt (paper Eq. 4 and 6); trajectory examples
(step-mode agents) train the assistant turns only.
"""

from __future__ import annotations

import pandas as pd

from envisions_flow.environments.base import Environment, Messages, Task
from envisions_flow.generation.base import render_chat


def build_examples(u1: pd.DataFrame, u2: pd.DataFrame, environment: Environment, tokenizer) -> list[dict[str, str]]:
    """Prompt/completion pairs for L1 (from U1) and L2 (from U2), prompts rendered as at sampling time."""
    examples = []
    for row in u1.itertuples():
        task = Task(row.id, row.question, "")
        prompt = render_chat(tokenizer, environment.explore_prompt(task, few_shot=False))
        examples.append({"prompt": prompt, "completion": environment.render_solution(row.positive), "loss": "L1"})
    for row in u2.itertuples():
        task = Task(row.id, row.question, "")
        prompt = render_chat(tokenizer, environment.refine_prompt(task, row.negative))
        examples.append({"prompt": prompt, "completion": environment.render_solution(row.positive), "loss": "L2"})
    return examples


def build_pairs(pairs: pd.DataFrame, environment: Environment, tokenizer) -> list[dict[str, str]]:
    """Preference examples for DPO: the zero-shot prompt for x, a⁺ chosen, a⁻ rejected."""
    examples = []
    for row in pairs.itertuples():
        prompt = render_chat(tokenizer, environment.explore_prompt(Task(row.id, row.question, ""), few_shot=False))
        examples.append({"prompt": prompt, "chosen": environment.render_solution(row.positive),
                         "rejected": environment.render_solution(row.negative)})
    return examples


def trajectory_example(tokenizer, messages: Messages, first_trained: int = 0) -> dict[str, list[int]]:
    """A multi-turn conversation as `input_ids` and `assistant_masks` (1 on the tokens the agent wrote).

    Step-mode trajectories (agents.py) interleave the agent's actions with the environment's
    observations; only the agent's turns are its own tokens, so only those carry loss (IPR Eq. 2)
    and count in DPO's sequence log-probs. An assistant message counts from index
    `first_trained` on, its end-of-turn token included, which is how a step pair trains on the
    suffix e_{t:n} after a shared prefix e_{t-1}. The spans come from rendering the chat
    template on growing prefixes, so they hold for any template that extends a conversation
    by appending to its text (ChatML, Llama, ...); TRL's SFTTrainer takes such rows as they are.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or index < first_trained:
            continue
        start = len(tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True))
        end = len(tokenizer.apply_chat_template(messages[: index + 1], tokenize=False))
        if text[:end] != tokenizer.apply_chat_template(messages[: index + 1], tokenize=False):
            raise ValueError("the chat template does not render a conversation as the extension of its prefixes")
        spans.append((start, end))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    masks = [int(any(start <= first < end for start, end in spans)) for first, _ in encoded["offset_mapping"]]
    return {"input_ids": list(encoded["input_ids"]), "assistant_masks": masks}
