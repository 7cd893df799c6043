"""Training the policy on L1 + L2 (paper Eq. 4 and 6) with TRL's SFTTrainer, and DPO for the baselines.

Both losses are plain next-token loss on the positive program a⁺; they differ
only in the prompt: U1 examples use the zero-shot prompt for x, U2 examples the
self-refine prompt with the negative a⁻ as the program to repair. Prompt tokens
are masked (TRL's completion-only loss) and EOS is appended. The same code path
takes DeepSpeed when a config file is given (`training.deepspeed_config`, e.g.
config/deepspeed/zero3.json). Under torchrun (src/envisions_flow/launch.py) every
rank runs `train`; only rank 0 touches the file system, and the checkpoint is
renamed into place once, by rank 0, after all ranks have finished.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from .artifacts import write_json
from .environments.base import Environment, Messages, Task
from .generation import render_chat


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


def _trainer_arguments(settings: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Arguments shared by the SFT and DPO trainers (batch, schedule, precision, seeds)."""
    import torch

    on_gpu = torch.cuda.is_available()
    per_device = int(settings["per_device_batch_size"])
    # under torchrun each rank is one device; a single process uses all GPUs it sees (DataParallel)
    devices = _world_size() if _world_size() > 1 else (max(1, torch.cuda.device_count()) if on_gpu else 1)
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": float(settings["epochs"]),
        "learning_rate": float(settings["learning_rate"]),
        "lr_scheduler_type": settings["lr_scheduler"],
        "warmup_steps": float(settings["warmup_ratio"]),  # a float below 1 is a ratio of all steps
        "weight_decay": float(settings["weight_decay"]),
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": max(1, int(settings["effective_batch_size"]) // (per_device * devices)),
        "max_length": int(settings["max_length"]),
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "gradient_checkpointing": bool(settings.get("gradient_checkpointing", False)),
        # non-reentrant checkpointing is what DeepSpeed ZeRO-3 and DDP work with
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if settings.get("gradient_checkpointing") else None,
        "deepspeed": settings.get("deepspeed_config") or None,
        # several CPU processes (torchrun, gloo) are distributed for accelerate only with use_cpu; DeepSpeed sets up its own
        "use_cpu": not on_gpu and _world_size() > 1 and not settings.get("deepspeed_config"),
        "seed": int(settings["seed"]),
        "data_seed": int(settings["seed"]),
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "dataset_num_proc": None,
    }


def _world_size() -> int:
    """Processes training together (torchrun sets WORLD_SIZE in each of them); 1 when run plainly."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def _is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes files."""
    return int(os.environ.get("RANK") or 0) == 0


def _barrier() -> None:
    """Wait for every rank (a no-op when training runs as one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def attention_implementation(bf16: bool) -> str:
    """FlashAttention-2 on CUDA in bf16 when `flash_attn` is installed, PyTorch's SDPA otherwise."""
    import torch

    if bf16 and torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _tokenizer(model: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def make_trainer(base_model: str | Path, examples: list[dict[str, str]], settings: dict[str, Any], output_dir: Path):
    """An SFTTrainer over prompt/completion examples with prompt tokens masked."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(**_trainer_arguments(settings, output_dir), completion_only_loss=True,
                       train_sampling_strategy="group_by_length")  # less padding per batch
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16 if config.bf16 else torch.float32,
                                                 attn_implementation=attention_implementation(config.bf16))
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=_tokenizer(base_model))


def make_dpo_trainer(sft_model: str | Path, pairs: list[dict[str, str]], settings: dict[str, Any],
                     dpo: dict[str, Any], output_dir: Path):
    """A DPOTrainer whose policy and reference both start from `sft_model` (the reference stays frozen)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    arguments = _trainer_arguments(settings, output_dir)
    arguments.update({"learning_rate": float(dpo["learning_rate"]), "warmup_steps": float(dpo["warmup_ratio"]),
                      "num_train_epochs": float(dpo.get("epochs") or settings["epochs"])})
    config = DPOConfig(**arguments, beta=float(dpo["beta"]),
                       model_init_kwargs={"dtype": "bfloat16" if arguments["bf16"] else "float32",
                                          "attn_implementation": attention_implementation(arguments["bf16"])})
    return DPOTrainer(model=str(sft_model), args=config, train_dataset=Dataset.from_list(pairs),
                      processing_class=_tokenizer(sft_model))


def _lora_config(lora: dict[str, Any]):
    """peft's LoraConfig from the `mixture.lora` keys."""
    from peft import LoraConfig

    return LoraConfig(r=int(lora["r"]), lora_alpha=int(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                      target_modules=lora["target_modules"], task_type="CAUSAL_LM")


def _quantization(lora: dict[str, Any] | None) -> dict[str, Any]:
    """QLoRA (4-bit NF4 base weights) where a GPU and bitsandbytes exist; full precision otherwise."""
    import torch

    if lora is None or not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        return {}
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_compute_dtype=torch.bfloat16)}


def _merge_adapter(base_model: str | Path, adapter_dir: Path, out_dir: Path) -> None:
    """A LoRA adapter trained on a 4-bit base, merged into the base loaded in bf16 and saved as a plain model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16)
    PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().save_pretrained(str(out_dir))
    shutil.rmtree(adapter_dir, ignore_errors=True)


def train_trajectories(init_model: str | Path, examples: Sequence[Mapping[str, Any]], settings: dict[str, Any],
                       out_dir: str | Path, lora: dict[str, Any] | None = None) -> dict[str, Any]:
    """SFT on multi-turn conversations (`trajectory_example` rows: loss on the agent's turns only).

    IPR's base agent (full fine-tuning on expert trajectories) and the mixture runs (LoRA,
    `lora` = the `mixture.lora` keys) train here. A LoRA adapter is merged into the saved
    weights, so every later stage loads a plain checkpoint. Saved atomically like `train`.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    out_dir = Path(out_dir)
    staging = _staging(out_dir)
    main = _is_main_process()
    metrics: dict[str, Any] = {"init_model": str(init_model), "train_examples": len(examples),
                               "lora": dict(lora) if lora else None, "processes": _world_size()}
    if not examples:
        if main:
            shutil.copytree(init_model, staging)
        metrics["note"] = "nothing to train on; initial model copied"
    else:
        config = SFTConfig(**_trainer_arguments(settings, staging / "trainer"), train_sampling_strategy="group_by_length")
        quantization = _quantization(lora)
        model = AutoModelForCausalLM.from_pretrained(
            init_model, dtype=torch.bfloat16 if config.bf16 else torch.float32,
            attn_implementation=attention_implementation(config.bf16), **quantization)
        dataset = Dataset.from_list([{"input_ids": list(e["input_ids"]), "assistant_masks": list(e["assistant_masks"])}
                                     for e in examples])
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=_tokenizer(init_model),
                             peft_config=_lora_config(lora) if lora else None)
        metrics["sft"] = _save(trainer, staging, lora_base=init_model if lora else None, quantized=bool(quantization))
    if main:
        _publish(metrics, staging, out_dir)
    return metrics


def _staging(out_dir: Path) -> Path:
    """The directory a checkpoint is written to before it is renamed into place, emptied by rank 0.

    The other ranks write nothing before the trainer's first collective, which waits for rank 0.
    """
    staging = out_dir.with_name(out_dir.name + ".partial")
    if _is_main_process():
        shutil.rmtree(staging, ignore_errors=True)
    return staging


def _publish(metrics: dict[str, Any], staging: Path, out_dir: Path) -> None:
    """Rank 0: training.json beside the weights, then the finished checkpoint renamed into place."""
    write_json(metrics, staging / "training.json")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def _save(trainer, out_dir: Path, lora_base: str | Path | None = None, quantized: bool = False) -> dict[str, Any]:
    """Train, then save the weights and tokenizer to `out_dir`.

    With `lora_base`, the LoRA adapter is merged first, so every later stage loads a plain
    checkpoint: into the trained weights, or (QLoRA, `quantized`) into `lora_base` reloaded in
    bf16, not into the 4-bit weights it trained on.
    """
    result = trainer.train()
    if lora_base is not None and quantized:
        trainer.model.save_pretrained(str(out_dir / "adapter"))
        if _is_main_process():
            _merge_adapter(lora_base, out_dir / "adapter", out_dir)
    else:
        if lora_base is not None:
            trainer.model = trainer.model.merge_and_unload()
        trainer.save_model(str(out_dir))  # every rank: under ZeRO-3 it gathers the sharded weights; rank 0 writes
    if _is_main_process():
        trainer.processing_class.save_pretrained(str(out_dir))
        shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    _barrier()  # the next stage (DPO after SFT) reads what rank 0 wrote
    return {**result.metrics, "global_step": result.global_step}


def train(init_model: str | Path, examples: list[dict[str, str]], settings: dict[str, Any], out_dir: str | Path,
          pairs: list[dict[str, str]] = (), dpo: dict[str, Any] | None = None) -> dict:
    """Fine-tune `init_model` on `examples` (SFT), then on `pairs` (DPO) when given; save to `out_dir` atomically.

    ENVISIONS passes the base model and no pairs: the policy is trained from
    scratch each iteration. With nothing to learn from, the checkpoint is a copy
    of `init_model`, so every iteration has a self-contained policy.
    """
    out_dir = Path(out_dir)
    staging = _staging(out_dir)
    main = _is_main_process()
    metrics: dict[str, Any] = {"init_model": str(init_model), "train_examples": len(examples),
                               "l1_examples": sum(e["loss"] == "L1" for e in examples),
                               "l2_examples": sum(e["loss"] == "L2" for e in examples), "dpo_pairs": len(pairs),
                               "processes": _world_size()}
    current = Path(init_model)
    if examples:
        sft_dir = staging / "sft" if pairs else staging
        metrics["sft"] = _save(make_trainer(current, examples, settings, sft_dir / "trainer"), sft_dir)
        current = sft_dir
    if pairs:
        metrics["dpo"] = _save(make_dpo_trainer(current, list(pairs), settings, dpo or {}, staging / "trainer"),
                               staging)
        if main:
            shutil.rmtree(staging / "sft", ignore_errors=True)
    elif not examples:
        if main:
            shutil.copytree(init_model, staging)
        metrics["note"] = "nothing to train on; initial model copied"
    if main:  # rank 0 alone writes training.json and renames the checkpoint into place
        _publish(metrics, staging, out_dir)
    return metrics


# ---- IPR (ipr.py): o-DPO (Eq. 7) + s-DPO (Eq. 8) + SFT (Eq. 9) in one Trainer ------------------------

IPR_LOSSES = ("o_dpo", "s_dpo", "sft")  # the terms of L (paper Eq. 10)


def ipr_examples(tokenizer, pairs: Iterable[Mapping[str, Any]], max_length: int) -> tuple[list[dict[str, Any]], int]:
    """Token ids and agent-token masks of each pair's chosen and rejected conversations; how many pairs were dropped.

    Both sides continue the pair's prompt and only the agent's turns after it count
    (`trajectory_example(first_trained=len(prompt))`), so observations and the shared prefix
    e_{t-1} carry no log-prob. A conversation longer than `max_length` keeps its start; a pair
    left without an agent token on either side is dropped (its DPO margin would be 0 by
    construction, its SFT term empty).
    """
    from .ipr import messages_from_cell

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


def _load_causal_lm(model: str | Path, bf16: bool):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16 if bf16 else torch.float32,
                                                attn_implementation=attention_implementation(bf16))


def _reference_logps(reference_model: str | Path, examples: Sequence[Mapping[str, Any]], pad_token_id: int,
                     batch_size: int, bf16: bool) -> list[tuple[float, float]]:
    """(chosen, rejected) log-probs of every example under the frozen reference, computed once before training.

    Only the policy is in memory while it trains. Under torchrun every rank computes them all on
    its own device (the reference must fit on one device).
    """
    import torch

    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK") or 0)) if torch.cuda.is_available() else "cpu"
    model = _load_causal_lm(reference_model, bf16).to(device).eval()
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
                     output_dir: Path):
    """A `transformers.Trainer` whose loss is the batch estimate of IPR's Eq. 10 (`ipr.mixture_loss`).

    Each row holds its reference log-probs and loss weights (`ipr.loss_weights`), so the
    reference model is not loaded here. The schedule is cosine, as in the paper; batch,
    precision, DeepSpeed and torchrun come from the shared training settings. The loss terms
    o_dpo, s_dpo and sft are logged beside the loss (this process's batches).
    """
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from .ipr import dpo_loss, mixture_loss

    arguments = _trainer_arguments(settings, output_dir)
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

    model = _load_causal_lm(policy_init, args.bf16)
    for module in model.modules():  # as TRL's DPO: the policy starts equal to the reference it is compared to
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    tokenizer = _tokenizer(policy_init)
    return IPRTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      data_collator=IPRCollator(tokenizer.pad_token_id), processing_class=tokenizer)


def train_ipr(policy_init: str | Path, reference_model: str | Path, pairs: Iterable[Mapping[str, Any]],
              settings: dict[str, Any], out_dir: str | Path, beta: float,
              sft_on: str = "outcome_winners", losses: Sequence[str] = IPR_LOSSES) -> dict[str, Any]:
    """Train the policy on IPR pairs (`ipr.contrastive_pairs` rows) with L = o-DPO + s-DPO + SFT; save atomically.

    The policy starts from `policy_init` (the previous iteration's agent) while the DPO
    reference stays `reference_model` (the SFT agent); the reference log-probs are computed once
    up front. `sft_on` is "outcome_winners" (paper Eq. 9) or "all_chosen" (the authors' code).
    `losses` names the terms kept (IPR Table 4's ablations leave one out; a term left out weighs 0).
    Without pairs the checkpoint is a copy of `policy_init`, like `train`.
    """
    from .ipr import OUTCOME, SFT_ON, STEP, loss_weights

    if sft_on not in SFT_ON:
        raise ValueError(f"sft_on must be one of {SFT_ON}, got {sft_on!r}")
    if not set(losses) <= set(IPR_LOSSES) or not losses:
        raise ValueError(f"losses must be a non-empty subset of {IPR_LOSSES}, got {list(losses)}")
    out_dir = Path(out_dir)
    staging = _staging(out_dir)
    main = _is_main_process()
    tokenizer = _tokenizer(policy_init)
    examples, dropped = ipr_examples(tokenizer, pairs, int(settings["max_length"]))
    kinds = [example["kind"] for example in examples]
    metrics: dict[str, Any] = {"init_model": str(policy_init), "reference_model": str(reference_model),
                               "beta": float(beta), "sft_on": sft_on, "losses": list(losses), "outcome_pairs": kinds.count(OUTCOME),
                               "step_pairs": kinds.count(STEP), "dropped_pairs": dropped,
                               "processes": _world_size()}
    if examples:
        bf16 = _trainer_arguments(settings, staging / "trainer")["bf16"]
        references = _reference_logps(reference_model, examples, tokenizer.pad_token_id,
                                      int(settings["per_device_batch_size"]), bf16)
        kept = {OUTCOME: "o_dpo" in losses, STEP: "s_dpo" in losses}
        rows = [{**{key: value for key, value in example.items() if key != "kind"},
                 "reference_chosen_logps": chosen, "reference_rejected_logps": rejected,
                 "dpo_weight": dpo_weight if kept[example["kind"]] else 0.0,
                 "sft_weight": sft_weight if "sft" in losses else 0.0, "is_outcome": float(example["kind"] == OUTCOME)}
                for example, (chosen, rejected), (dpo_weight, sft_weight)
                in zip(examples, references, loss_weights(kinds, sft_on))]
        trainer = make_ipr_trainer(policy_init, rows, settings, beta, staging / "trainer")
        metrics["ipr"] = _save(trainer, staging)
        metrics["ipr"]["log"] = [entry for entry in trainer.state.log_history if "loss" in entry]  # with the terms
    else:
        if main:
            shutil.copytree(policy_init, staging)
        metrics["note"] = "no preference pairs; policy copied"
    if main:
        _publish(metrics, staging, out_dir)
    return metrics
