"""IPR's trainer (paper Eq. 10): outcome DPO + step DPO + SFT, with reference log-probs computed once.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from envisions_flow.training.devices import (
    is_main_process,
    job_setup,
    load_model,
    local_rank,
    reporting_callbacks,
    trainer_arguments,
    world_size,
)
from envisions_flow.training.examples import trajectory_example
from envisions_flow.training.trainers import load_tokenizer, publish_checkpoint, save_checkpoint, staging_dir
from envisions_flow.workflow.memory_model import TrainingSetup

IPR_LOSSES = ("o_dpo", "s_dpo", "sft")  # the terms of L (paper Eq. 10)


def ipr_examples(tokenizer, pairs: Iterable[Mapping[str, Any]], max_length: int) -> tuple[list[dict[str, Any]], int]:
    """Token ids and agent-token masks of each pair's chosen and rejected conversations; how many pairs were dropped.

    Both sides continue the pair's prompt and only the agent's turns after it count
    (`trajectory_example(first_trained=len(prompt))`), so observations and the shared prefix
    e_{t-1} carry no log-prob. A conversation longer than `max_length` keeps its start; a pair
    left without an agent token on either side is dropped (its DPO margin would be 0 by
    construction, its SFT term empty).
    """
    from envisions_flow.methods.ipr import messages_from_cell

    examples, dropped = [], 0
    for pair in pairs:
        prompt = messages_from_cell(pair["prompt"])
        sides = {}
        for side in ("chosen", "rejected"):
            encoded = trajectory_example(tokenizer, prompt + messages_from_cell(pair[side]), len(prompt))
            sides[f"{side}_input_ids"] = encoded["input_ids"][:max_length]
            sides[f"{side}_assistant_masks"] = encoded["assistant_masks"][:max_length]
        if not (any(sides["chosen_assistant_masks"]) and any(sides["rejected_assistant_masks"])):
            dropped += 1
            continue
        examples.append({"kind": str(pair["kind"]), **sides})
    return examples, dropped


class IPRCollator:
    """Pads a batch's chosen and rejected sequences to one length, chosen rows first: one forward pass for both."""

    per_example = ("reference_chosen_logps", "reference_rejected_logps", "dpo_weight", "sft_weight", "is_outcome")

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        ids = [row["chosen_input_ids"] for row in rows] + [row["rejected_input_ids"] for row in rows]
        masks = [row["chosen_assistant_masks"] for row in rows] + [row["rejected_assistant_masks"] for row in rows]
        length = max(len(sequence) for sequence in ids)
        batch = {
            "input_ids": torch.tensor([s + [self.pad_token_id] * (length - len(s)) for s in ids]),
            "attention_mask": torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in ids]),
            "assistant_masks": torch.tensor([m + [0] * (length - len(m)) for m in masks], dtype=torch.float32),
        }
        for key in self.per_example:
            if key in rows[0]:
                batch[key] = torch.tensor([float(row[key]) for row in rows], dtype=torch.float32)
        return batch


def sequence_logps(model, input_ids, attention_mask, assistant_masks):
    """Per row, the sum of log π(token) over the tokens its assistant mask marks (the agent's own tokens)."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (token_logps * assistant_masks[:, 1:]).sum(-1)


def _reference_logps(reference_model: str | Path, examples: Sequence[Mapping[str, Any]], pad_token_id: int,
                     batch_size: int, setup: TrainingSetup) -> list[tuple[float, float]]:
    """(chosen, rejected) log-probs of every example under the frozen reference, computed once before training.

    Only the policy is in memory while it trains. Under torchrun every rank computes them all on
    its own device (the reference must fit on one device).
    """
    import torch

    device = torch.device("cuda", local_rank()) if torch.cuda.is_available() else "cpu"
    model = load_model(reference_model, setup, trained=False, device_map={"": device})
    collate, out = IPRCollator(pad_token_id), []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start:start + batch_size])
            logps = sequence_logps(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                   batch["assistant_masks"].to(device)).tolist()
            half = len(logps) // 2
            out.extend(zip(logps[:half], logps[half:]))
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def make_ipr_trainer(policy_init: str | Path, rows: list[dict[str, Any]], settings: dict[str, Any], beta: float,
                     output_dir: Path, setup: TrainingSetup, run_name: str | None = None, log_dir: Path | None = None):
    """A `transformers.Trainer` whose loss is the batch estimate of IPR's Eq. 10 (`ipr.mixture_loss`).

    Each row holds its reference log-probs and loss weights (`ipr.loss_weights`), so the
    reference model is not loaded here. The schedule is cosine, as in the paper; batch,
    precision, DeepSpeed and torchrun come from the shared training settings. The loss terms
    o_dpo, s_dpo and sft are logged beside the loss (this process's batches).
    """
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from envisions_flow.methods.ipr import dpo_loss, mixture_loss

    arguments = trainer_arguments(settings, output_dir, setup, run_name)
    for sft_only in ("max_length", "dataset_num_proc"):  # SFTConfig fields; lengths are cut in ipr_examples
        arguments.pop(sft_only)
    arguments.update({"lr_scheduler_type": "cosine", "remove_unused_columns": False})
    args = TrainingArguments(**arguments)

    class IPRTrainer(Trainer):  # defined here: importing this module stays free of transformers
        loss_is_scaled_for_ga = False  # a batch mean: the Trainer divides it by the accumulation steps

        def __init__(self, *positional, **keywords):
            super().__init__(*positional, **keywords)
            self._terms: dict[str, float] = {}
            self._batches = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logps = sequence_logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["assistant_masks"])
            n = inputs["dpo_weight"].shape[0]
            chosen, rejected = logps[:n], logps[n:]
            reference = (inputs["reference_chosen_logps"], inputs["reference_rejected_logps"])
            loss = mixture_loss(chosen, rejected, *reference, inputs["dpo_weight"], inputs["sft_weight"], beta)
            with torch.no_grad():
                weighted = inputs["dpo_weight"] * dpo_loss(chosen, rejected, *reference, beta)
                outcome = inputs["is_outcome"]
                for name, value in (("o_dpo", weighted * outcome), ("s_dpo", weighted * (1 - outcome)),
                                    ("sft", -inputs["sft_weight"] * chosen)):
                    self._terms[name] = self._terms.get(name, 0.0) + value.mean().item()
            self._batches += 1
            return (loss, {"logps": logps}) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if self._batches and "loss" in logs:
                logs = {**logs, **{name: total / self._batches for name, total in self._terms.items()}}
                self._terms, self._batches = {}, 0
            super().log(logs, start_time)

    model = load_model(policy_init, setup)
    for module in model.modules():  # as TRL's DPO: the policy starts equal to the reference it is compared to
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    tokenizer = load_tokenizer(policy_init)
    return IPRTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      data_collator=IPRCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                      callbacks=reporting_callbacks(settings, log_dir))


def train_ipr(policy_init: str | Path, reference_model: str | Path, pairs: Iterable[Mapping[str, Any]],
              settings: dict[str, Any], out_dir: str | Path, beta: float,
              sft_on: str = "outcome_winners", losses: Sequence[str] = IPR_LOSSES, run_name: str | None = None,
              log_dir: Path | None = None) -> dict[str, Any]:
    """Train the policy on IPR pairs (`ipr.contrastive_pairs` rows) with L = o-DPO + s-DPO + SFT; save atomically.

    The policy starts from `policy_init` (the previous iteration's agent) while the DPO
    reference stays `reference_model` (the SFT agent); the reference log-probs are computed once
    up front. `sft_on` is "outcome_winners" (paper Eq. 9) or "all_chosen" (the authors' code).
    `losses` names the terms kept (IPR Table 4's ablations leave one out; a term left out weighs 0).
    Without pairs the checkpoint is a copy of `policy_init`, like `train`.
    """
    from envisions_flow.methods.ipr import OUTCOME, SFT_ON, STEP, loss_weights

    if sft_on not in SFT_ON:
        raise ValueError(f"sft_on must be one of {SFT_ON}, got {sft_on!r}")
    if not set(losses) <= set(IPR_LOSSES) or not losses:
        raise ValueError(f"losses must be a non-empty subset of {IPR_LOSSES}, got {list(losses)}")
    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    main = is_main_process()
    tokenizer = load_tokenizer(policy_init)
    examples, dropped = ipr_examples(tokenizer, pairs, int(settings["max_length"]))
    kinds = [example["kind"] for example in examples]
    metrics: dict[str, Any] = {"init_model": str(policy_init), "reference_model": str(reference_model),
                               "beta": float(beta), "sft_on": sft_on, "losses": list(losses), "outcome_pairs": kinds.count(OUTCOME),
                               "step_pairs": kinds.count(STEP), "dropped_pairs": dropped,
                               "processes": world_size()}
    if examples:
        setup = job_setup(policy_init, settings, pairs=True)
        references = _reference_logps(reference_model, examples, tokenizer.pad_token_id,
                                      int(settings["per_device_batch_size"]), setup)
        kept = {OUTCOME: "o_dpo" in losses, STEP: "s_dpo" in losses}
        rows = [{**{key: value for key, value in example.items() if key != "kind"},
                 "reference_chosen_logps": chosen, "reference_rejected_logps": rejected,
                 "dpo_weight": dpo_weight if kept[example["kind"]] else 0.0,
                 "sft_weight": sft_weight if "sft" in losses else 0.0, "is_outcome": float(example["kind"] == OUTCOME)}
                for example, (chosen, rejected), (dpo_weight, sft_weight)
                in zip(examples, references, loss_weights(kinds, sft_on))]
        trainer = make_ipr_trainer(policy_init, rows, settings, beta, staging / "trainer", setup, run_name, log_dir)
        metrics["ipr"] = save_checkpoint(trainer, staging)
        metrics["ipr"]["log"] = [entry for entry in trainer.state.log_history if "loss" in entry]  # with the terms
    else:
        if main:
            shutil.copytree(policy_init, staging)
        metrics["note"] = "no preference pairs; policy copied"
    if main:
        publish_checkpoint(metrics, staging, out_dir)
    return metrics
