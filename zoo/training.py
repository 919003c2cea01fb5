"""Training a subject for one step: the loss a user would train with, and its gradients.

Language models are trained on their own loss (`labels`); encoders have no loss of their own, so
they get a generic one (the mean square of every floating output) that reaches every weight the
outputs depend on. Properties call `gradients(...)` and never branch on the model type.
"""

from __future__ import annotations

import copy
import inspect
import re
from typing import Any, Mapping

import torch

from zoo.compat import enable_activation_checkpointing
from zoo.derived import derived
from zoo.subject import Subject, flatten_outputs, to_tensors


# Train-time randomness that changes which parameters run or which inputs exist, rather than
# perturbing values like dropout: switched off in training copies, because "every parameter gets a
# gradient" and "checkpointing gives the same gradients" are not meant to hold across a skipped
# layer or a masked-out span. (config attribute, neutral value, why)
STRUCTURAL_RANDOMNESS = (
    ("layerdrop", 0.0, "LayerDrop skips whole layers at random: their parameters get no gradient"),
    ("encoder_layerdrop", 0.0, "LayerDrop on the encoder side"),
    ("decoder_layerdrop", 0.0, "LayerDrop on the decoder side"),
    ("mask_time_prob", 0.0, "SpecAugment masks time spans and refuses inputs shorter than mask_time_length"),
    ("mask_feature_prob", 0.0, "SpecAugment masks feature channels"),
)
# Modules whose train-mode statistics need more than one value per channel (a batch of one 1x1 map
# fails in BatchNorm); kept in eval mode (running statistics), as when fine-tuning with frozen norms.
EVAL_MODE_IN_TRAINING = (torch.nn.modules.batchnorm._BatchNorm,)
# Parameters that only input masking uses (replacing masked patches or frames when the caller asks
# for it, or when SpecAugment, switched off above, masks): no plain forward reaches them.
MASKING_ONLY_PARAMETERS = ("mask_token", "masked_spec_embed")


LABEL_ARGUMENT = re.compile(r"(^|_)labels$")  # labels, duration_labels, spectrogram_labels, ...


class TrainingRefused(Exception):
    """The model refuses a training forward without labels the suite cannot make (FastSpeech2Conformer
    needs spectrogram, duration, pitch and energy targets): a clear refusal, not a defect."""


def _train_forward(subject: Subject, kwargs: Mapping[str, Any]):
    """`subject.model(**kwargs)`; a ValueError about labels, from a forward that names label arguments
    left unpassed, becomes TrainingRefused. Any other error propagates."""
    try:
        return subject.model(**kwargs)
    except ValueError as exc:
        unpassed = [name for name in inspect.signature(subject.model.forward).parameters
                    if LABEL_ARGUMENT.search(name) and name not in kwargs]
        if unpassed and "label" in str(exc).lower():
            raise TrainingRefused(f"{type(subject.model).__name__} refuses a training forward without "
                                  f"{unpassed}: {str(exc).strip().splitlines()[0][:160]}") from exc
        raise


def training_copy(subject: Subject, *, checkpointing: bool = False) -> Subject:
    """A copy of the subject in train mode (dropout on), optionally with activation checkpointing.

    Built once per model object; the shared subject itself stays in eval mode.
    """

    def make(original: Subject) -> Subject:
        trained = original.with_model(copy.deepcopy(original.model))
        if checkpointing:
            enable_activation_checkpointing(trained.model)
        for module in trained.model.modules():
            config = getattr(module, "config", None)
            for attribute, neutral, _why in STRUCTURAL_RANDOMNESS:
                if config is not None and getattr(config, attribute, None):
                    setattr(config, attribute, neutral)
        trained.model.train()
        for module in trained.model.modules():
            if isinstance(module, EVAL_MODE_IN_TRAINING):
                module.eval()
        return trained

    return derived(subject, f"train, checkpointing={checkpointing}", make)


def labels_for(subject: Subject, inputs: Mapping[str, Any]) -> torch.Tensor | None:
    """`labels` for the model's own loss: the decoded sequence, padding ignored (-100).

    None (use the generic loss) for encoders and for causal batches with nothing to predict.
    """
    tensors = to_tensors(inputs)
    if subject.spec.head != "seq2seq_lm" and not subject.spec.has("causal"):
        return None  # a base model or a classifier: no LM loss (a classifier's labels are classes)
    if subject.spec.has("encoder_decoder") and "decoder_input_ids" in tensors:
        return tensors["decoder_input_ids"].clone()
    if subject.spec.has("causal"):
        labels = tensors["input_ids"].clone()
        if "attention_mask" in tensors:
            labels[tensors["attention_mask"] == 0] = -100
        # the LM loss predicts token i+1 from tokens ..i: one-token items have no target, and a batch
        # without any target has a mean over nothing (NaN by definition): use the generic loss then
        return labels if (labels[:, 1:] != -100).any() else None
    return None


def training_loss(subject: Subject, inputs: Mapping[str, Any]) -> torch.Tensor:
    """The scalar loss of the subject's model on `inputs`, with gradients on (call on a training copy)."""
    labels = labels_for(subject, inputs)
    extra = {} if labels is None else {"labels": labels.to(subject.device)}
    output = _train_forward(subject, subject.model_kwargs(inputs, **extra))
    if labels is not None:
        return output.loss
    floats = [t for t in flatten_outputs(output).values() if t.is_floating_point()]
    return sum(t.float().pow(2).mean() for t in floats)


def gradients(subject: Subject, inputs: Mapping[str, Any], *, seed: int = 0):
    """`(loss, {trainable parameter name: grad or None})` after one backward, dropout seeded with `seed`.

    The global RNG is left as it was (`fork_rng`), so seeding here does not change other tests' draws.
    Parameters of modules that never ran in this forward are left out: a tower the inputs do not
    feed (the audio encoder of an audio-text LM given text alone) cannot pass gradients. A module
    that ran and still gives its parameters no gradient (a detach, an unused branch) stays in.
    """
    model = subject.model
    model.zero_grad(set_to_none=True)
    ran: set[int] = set()
    hooks = [module.register_forward_hook(lambda module, args, output: ran.add(id(module)))
             for module in model.modules()]
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            loss = training_loss(subject, inputs)
            loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    grads = {name: p.grad for name, p in model.named_parameters()
             if p.requires_grad and name.rsplit(".", 1)[-1] not in MASKING_ONLY_PARAMETERS
             and (p.grad is not None or id(_owner(model, name)) in ran)}
    return loss.detach(), grads


def _owner(model: torch.nn.Module, parameter_name: str) -> torch.nn.Module:
    """The module that holds the parameter `parameter_name` directly."""
    path = parameter_name.rpartition(".")[0]
    return model.get_submodule(path) if path else model


def train_mode_outputs(subject: Subject, inputs: Mapping[str, Any], *, seed: int) -> dict[str, torch.Tensor]:
    """Outputs of a forward in train mode (dropout on) after `torch.manual_seed(seed)`, without gradients."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        return flatten_outputs(_train_forward(subject, subject.model_kwargs(inputs)))
