"""One subject per model per process: `--model` refs are built on first use and kept."""

from __future__ import annotations

from dataclasses import replace

from zoo.build import build_zoo_subject, pipeline_task_for, spec_for
from zoo.checkpoints import ModelRef, load_checkpoint
from zoo.subject import Subject


def build_subject(ref: ModelRef) -> Subject:
    """Build the subject a ref names: a zoo model from its config, or a user checkpoint."""
    if ref.is_zoo:
        return build_zoo_subject(ref.name)
    if getattr(ref, "catalog", False):  # --model registry...: generic tiny build + smoke (zoo/catalog.py)
        from zoo.catalog import build_catalog_subject

        return build_catalog_subject(ref.name)
    model, processor, why_no_processor = load_checkpoint(ref)
    spec = spec_for(ref.name, model, source=str(ref.path), processor=processor)
    task = pipeline_task_for(spec, processor)
    if task:
        spec = replace(spec, pipeline_task=task, capabilities=spec.capabilities | {"pipeline"})
    if why_no_processor:
        spec.extra["no_processor"] = why_no_processor
    return Subject(spec, model, processor)


class SubjectRegistry:
    """Builds each subject once and hands out the same object for the rest of the session."""

    def __init__(self, refs: list[ModelRef]):
        self.refs = {ref.name: ref for ref in refs}
        self._subjects: dict[str, Subject] = {}

    def __getitem__(self, name: str) -> Subject:
        if getattr(self.refs[name], "catalog", False):  # zoo/catalog.py keeps a few built, all failures
            return build_subject(self.refs[name])
        if name not in self._subjects:
            self._subjects[name] = build_subject(self.refs[name])
        return self._subjects[name]

    def names(self) -> list[str]:
        return list(self.refs)

    def header_notes(self) -> list[str]:
        """One line per checkpoint whose processor properties will not run, saying why."""
        notes = []
        for name, ref in self.refs.items():
            if ref.is_zoo or getattr(ref, "catalog", False):  # catalogue models are built on first use
                continue
            try:
                why = self[name].spec.extra.get("no_processor")
            except Exception:  # a checkpoint that does not load is reported once, at collection
                continue
            if why:
                notes.append(f"hfprops: {name}: processor properties (tokenizer, image processor, feature "
                             f"extractor, pipeline) not run: {why}")
        return notes
