"""The ``workbench finetune`` stage: one fine-tuning loop for a classification task with modes
``plain`` | ``prosocial`` | ``pac`` | ``pac+prosocial``, checkpoints every N steps and resume.

- plain: AdamW (PLM lr, classifier lr, weight decay) on the cross-entropy;
- prosocial: plain + the ProSocialTuning head penalty (prosocial.py) toward the debiased
  checkpoint for the heads of selected_heads.csv;
- pac: PAC-tuning (pac.py), K estimated on the training set before the first step;
- pac+prosocial: PAC-tuning with the head penalty added on the clean weights (the objective
  L_train + L_PAC + E_tuning that summaries of the ProSocialTuning paper give).
The model is a causal LM (last-token head) or a BERT/RoBERTa encoder ([CLS] head), see
classifier.py. Embeddings are frozen in every mode, by PAC-tuning's rule (names containing
``embed``, GPT-2's ``wte``/``wpe``), so modes stay comparable. ``dropout`` optionally sets every
dropout probability of the backbone (0.0 = PAC-tuning's BERT setting).

Checkpoints: ``run_dir/checkpoints/<name>/step-<NNNNNN>/`` with ``model.safetensors`` (the
classifier's state) and ``training_state.pt`` (tensors and optimizer state only, read back with
``torch.load(weights_only=True)``); ``final/`` and ``finetune_result.json`` (:data:`RESULT_FILE`)
at the end.
Data order is a seeded permutation per epoch, so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workbench.config_tables import dataclass_from_table
from workbench.finetune.classifier import (
    HEAD_PARAMETERS,
    CausalLMClassifier,
    EncoderClassifier,
    classifier_for,
    is_embedding_parameter,
    set_dropout,
)
from workbench.finetune.pac import KCurve, PACConfig, PACTuning, estimate_k_curve
from workbench.finetune.prosocial import AttentionGeometry, ProSocialPenalty, read_selected_heads
from workbench.finetune.tasks import LabelledText, read_classification_task, split_held_out, subsample_to_bias_ratio
from workbench.run_folder import RunFolder

MODES = ("plain", "prosocial", "pac", "pac+prosocial")
STATE_FILE = "training_state.pt"
WEIGHTS_FILE = "model.safetensors"
RESULT_FILE = "finetune_result.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """Downstream fine-tuning.

    Attributes:
        task / data_path: a task of tasks.py and its file.
        mode: plain | prosocial | pac | pac+prosocial.
        bias_ratio: share of cued training examples agreeing with their gender cue (None = as is).
        held_out_fraction: share of examples held out for accuracy; max_examples: cap (seeded).
        epochs, batch_size, max_length (tokens), learning_rate (PLM), classifier_learning_rate,
        weight_decay, seed: the loop (PAC modes take their rates from ``pac``).
        dropout: None keeps the checkpoint's dropout; a probability in [0, 1) sets every dropout
            of the backbone to it (0.0 as PAC-tuning's ``bert_clf``, which zeroes BERT's hidden
            and attention dropout).
        checkpoint_every: steps between checkpoints; checkpoint_name: folder under checkpoints/.
        selected_heads_path / debiased_checkpoint / prosocial_coefficient: prosocial modes.
        pac: PAC-tuning settings (a nested table).
    """

    task: str
    data_path: str
    mode: str = "plain"
    bias_ratio: float | None = None
    held_out_fraction: float = 0.2
    max_examples: int | None = None
    epochs: int = 3
    batch_size: int = 16
    max_length: int = 128
    learning_rate: float = 5e-5
    classifier_learning_rate: float = 1e-2
    weight_decay: float = 1e-2
    seed: int = 42
    dropout: float | None = None
    checkpoint_every: int = 50
    checkpoint_name: str = "finetuned"
    selected_heads_path: str | None = None
    debiased_checkpoint: str | None = None
    prosocial_coefficient: float = 0.01
    pac: PACConfig = field(default_factory=PACConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"finetune.mode is {self.mode!r}; use one of {MODES}")
        if "prosocial" in self.mode:
            self.prosocial_paths()
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"finetune.dropout is {self.dropout}; use a probability in [0, 1), or leave it out")

    def prosocial_paths(self) -> tuple[Path, Path]:
        """``(selected_heads_path, debiased_checkpoint)``, which a prosocial mode needs.

        Raises:
            ValueError: either is not set.
        """
        if self.selected_heads_path is None or self.debiased_checkpoint is None:
            raise ValueError(f"finetune.mode {self.mode} needs selected_heads_path and debiased_checkpoint")
        return Path(self.selected_heads_path), Path(self.debiased_checkpoint)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """Build from a TOML ``[finetune]`` table (``pac`` as a nested table); unknown keys are an error."""
        values = dict(data)
        if "pac" in values:
            values["pac"] = PACConfig.from_dict(values["pac"])
        return dataclass_from_table(cls, values, "finetune")


@dataclass(frozen=True)
class FinetuneResult:
    """Steps run in total, last training loss (nats), held-out accuracy (0..1) and split sizes."""

    steps: int
    final_train_loss: float
    held_out_accuracy: float
    n_train: int
    n_held_out: int


def prepare_examples(config: FinetuneConfig) -> tuple[list[LabelledText], list[LabelledText]]:
    """(train, held_out): read, cap, split, then set the bias ratio of the training part."""
    examples = read_classification_task(Path(config.data_path), config.task)
    if config.max_examples is not None:
        examples, _ = split_held_out(examples, 1 - config.max_examples / len(examples), config.seed)
    train, held_out = split_held_out(examples, config.held_out_fraction, config.seed)
    if config.bias_ratio is not None:
        train = subsample_to_bias_ratio(train, config.bias_ratio, config.seed)
    return train, held_out


class _Batches:
    """Tokenized batches of a fixed example list, in a seeded order per epoch; ``padding_side``
    None = the tokenizer's own."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        examples: list[LabelledText],
        config: FinetuneConfig,
        device: torch.device,
        padding_side: str | None = None,
    ) -> None:
        self.tokenizer, self.examples, self.config, self.device = tokenizer, examples, config, device
        self.padding_side = padding_side or tokenizer.padding_side
        self.per_epoch = math.ceil(len(examples) / config.batch_size)

    def encode(self, chosen: list[LabelledText]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        encoded = self.tokenizer(
            [e.text for e in chosen],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.config.max_length,
            padding_side=self.padding_side,
        )
        labels = torch.tensor([e.label for e in chosen])
        return encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device), labels.to(self.device)

    def at_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, index = divmod(step, self.per_epoch)
        order = torch.randperm(len(self.examples), generator=torch.Generator().manual_seed(self.config.seed + epoch))
        chosen = order[index * self.config.batch_size : (index + 1) * self.config.batch_size].tolist()
        return self.encode([self.examples[i] for i in chosen])

    def all(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        size = self.config.batch_size
        return [self.encode(self.examples[i : i + size]) for i in range(0, len(self.examples), size)]


def _latest_checkpoint(folder: Path) -> Path | None:
    steps = sorted(folder.glob("step-*"))
    return steps[-1] if steps else None


def _save_checkpoint(folder: Path, classifier: nn.Module, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in classifier.state_dict().items()}, str(folder / WEIGHTS_FILE)
    )
    torch.save(state, folder / STATE_FILE)


@torch.no_grad()
def held_out_accuracy(classifier: CausalLMClassifier | EncoderClassifier, batches: _Batches) -> float:
    """Share of held-out examples whose argmax class equals the label."""
    classifier.eval()
    correct = sum(int((classifier(ids, mask).argmax(dim=1) == labels).sum()) for ids, mask, labels in batches.all())
    return correct / len(batches.examples)


def finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: FinetuneConfig,
    run_dir: Path,
    stop_after_steps: int | None = None,
) -> FinetuneResult | None:
    """Train (resuming from the newest checkpoint of ``checkpoint_name`` if any) and evaluate.

    The classifier (classifier.py: last token for a causal LM, [CLS] for an encoder) wraps
    ``model.base_model``, so ``model`` is trained in place.

    ``stop_after_steps`` ends the run after that many total steps, with a checkpoint and no
    evaluation (returns None): an interruption a later call resumes from.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; set tokenizer.pad_token (e.g. to the EOS token) first")
    train, held_out = prepare_examples(config)
    device = next(model.parameters()).device
    torch.manual_seed(config.seed)
    n_classes = max(e.label for e in train + held_out) + 1
    classifier = classifier_for(model, n_classes).to(device)
    if config.dropout is not None:
        set_dropout(classifier.backbone, config.dropout)
    for name, param in classifier.named_parameters():
        param.requires_grad_(not is_embedding_parameter(name))
    trainable = [(n, p) for n, p in classifier.named_parameters() if p.requires_grad]
    batches = _Batches(tokenizer, train, config, device, classifier.padding_side)
    folder = RunFolder(Path(run_dir)).checkpoint(config.checkpoint_name)
    resume_from = _latest_checkpoint(folder)
    state: dict[str, Any] = {}
    if resume_from is not None:
        classifier.load_state_dict(load_file(str(resume_from / WEIGHTS_FILE)))
        state = torch.load(resume_from / STATE_FILE, weights_only=True)

    def batch_loss(step: int) -> torch.Tensor:
        ids, mask, labels = batches.at_step(step)
        classifier.train()
        return nn.functional.cross_entropy(classifier(ids, mask), labels)

    penalty = None
    if "prosocial" in config.mode:
        selected_heads, debiased_checkpoint = config.prosocial_paths()
        debiased = load_file(str(debiased_checkpoint / WEIGHTS_FILE))
        penalty = ProSocialPenalty(
            classifier,
            debiased,
            read_selected_heads(selected_heads),
            AttentionGeometry.from_config(model.config),
            config.prosocial_coefficient,
        )

    generator = torch.Generator().manual_seed(config.seed)
    trainer: PACTuning | torch.optim.Optimizer
    if config.mode.startswith("pac"):
        if state:
            k_curve = KCurve(tuple(state["k_scales"].tolist()), tuple(state["k_values"].tolist()))
        else:
            encoded = batches.all()  # the text is fixed; only the weights change between calls
            k_curve = estimate_k_curve(
                [p for _, p in trainable],
                lambda: torch.cat(
                    [nn.functional.cross_entropy(classifier(i, m), y, reduction="none") for i, m, y in encoded]
                ),
                config.pac,
                generator,
            )
        trainer = PACTuning(trainable, len(train), config.pac, k_curve, HEAD_PARAMETERS, generator)
    else:
        head = [p for n, p in trainable if n in HEAD_PARAMETERS]
        body = [p for n, p in trainable if n not in HEAD_PARAMETERS]
        trainer = torch.optim.AdamW(
            [{"params": body, "lr": config.learning_rate}, {"params": head, "lr": config.classifier_learning_rate}],
            weight_decay=config.weight_decay,
            fused=True,  # one kernel over all tensors: ~20x faster on CPU than the per-tensor loop
        )
    if state:
        trainer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])

    def checkpoint(step: int) -> None:
        saved: dict[str, Any] = {
            "step": torch.tensor(step),
            "optimizer": trainer.state_dict(),
            "generator": generator.get_state(),
        }
        if isinstance(trainer, PACTuning):
            saved["k_scales"] = torch.tensor(trainer.k_curve.prior_scales, dtype=torch.float64)
            saved["k_values"] = torch.tensor(trainer.k_curve.k_values, dtype=torch.float64)
        _save_checkpoint(folder / f"step-{step:06d}", classifier, saved)

    total_steps = config.epochs * batches.per_epoch
    step = int(state["step"]) if state else 0
    loss_value = float("nan")
    while step < total_steps:
        if isinstance(trainer, PACTuning):
            report = trainer.step(partial(batch_loss, step), epoch=step // batches.per_epoch, penalty_fn=penalty)
            loss_value = report.loss1
        else:
            trainer.zero_grad(set_to_none=True)
            loss = batch_loss(step)
            (loss + penalty() if penalty is not None else loss).backward()
            trainer.step()
            loss_value = float(loss.detach())
        step += 1
        if step % config.checkpoint_every == 0 or step == stop_after_steps:
            checkpoint(step)
        if step == stop_after_steps:
            return None
    classifier.eval()
    result = FinetuneResult(
        step,
        loss_value,
        held_out_accuracy(classifier, _Batches(tokenizer, held_out, config, device, classifier.padding_side)),
        len(train),
        len(held_out),
    )
    _save_checkpoint(folder / "final", classifier, {"step": torch.tensor(step)})
    (folder / RESULT_FILE).write_text(
        json.dumps({"result": asdict(result), "config": asdict(config)}, indent=2, default=str), encoding="utf-8"
    )
    return result
