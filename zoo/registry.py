"""One subject per model per process: `--model` refs are built on first use and kept."""

from __future__ import annotations

from zoo.build import PIPELINE_TASKS, build_zoo_subject, spec_for
from zoo.checkpoints import ModelRef, load_checkpoint
from zoo.subject import Subject


def build_subject(ref: ModelRef) -> Subject:
    """Build the subject a ref names: a zoo model from its config, or a user checkpoint."""
    if ref.is_zoo:
        return build_zoo_subject(ref.name)
    model, processor = load_checkpoint(ref)
    task = PIPELINE_TASKS.get(model.config.model_type) if processor is not None else None
    if task and model.config.model_type in ("bert", "roberta", "distilbert") and type(model).__name__.endswith(
        ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")
    ):
        task = None  # feature-extraction compares hidden states, which head models do not return as such
    spec = spec_for(ref.name, model, source=str(ref.path), pipeline_task=task)
    return Subject(spec, model, processor)


class SubjectRegistry:
    """Builds each subject once and hands out the same object for the rest of the session."""

    def __init__(self, refs: list[ModelRef]):
        self.refs = {ref.name: ref for ref in refs}
        self._subjects: dict[str, Subject] = {}

    def __getitem__(self, name: str) -> Subject:
        if name not in self._subjects:
            self._subjects[name] = build_subject(self.refs[name])
        return self._subjects[name]

    def names(self) -> list[str]:
        return list(self.refs)
