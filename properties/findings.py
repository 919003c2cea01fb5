"""The one findings list (`properties/findings.toml`): upstream behaviour the suite finds, keyed by
the component it is about, so one recorded finding applies to every checkpoint that uses it.

A finding names
- `component`: an fnmatch pattern of a class name (the model class, any of its submodules, the
  processor and its parts, each with its base classes), of the attention implementation its configs
  select (`attn_implementation:eager`), of a method a model class defines
  (`Qwen2_5_VLModel.compute_3d_position_ids`), of a `tokenizers.<Part>` of a fast
  tokenizer's backend, or of a transformers function the model's modeling file calls
  (`transformers.masking_utils.create_bidirectional_mask`);
- `property`: the test function (fnmatch), and optionally `case`: the test's other parameters
  (`RGBA` in `test_pixel_values[vit-RGBA]`);
- `versions`: the transformers releases where it shows (a PEP 440 specifier, default all);
- `match`: a regular expression the failure message must match. A failure of the same test that
  does not match is a new failure and stays red: a finding never swallows what it does not describe;
- `reason`, `input` (the shrunk failing input), and `strict`: true makes the test's xfail strict on
  the zoo models (when any strict finding describes the test), where the suite measured the finding (a pass there means upstream fixed it). On
  other checkpoints a finding is never strict: the same component may be configured so that it
  does not show. `models` (optional) restricts a finding to named subjects, for findings that
  depend on trained weights rather than on code; `capabilities` (optional) to subjects that have
  them (a generation bug of encoder-decoder models lives in the shared `GenerationMixin`).

A test a recorded finding describes runs without Hypothesis' shrink phase: the list holds its shrunk
input already. A failure that is not the recorded one runs again with shrinking, so it comes shrunk.

The end of a run lists the findings it met.
"""

from __future__ import annotations

import fnmatch
import inspect
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import Phase, settings

# The one findings list; HFPROPS_FINDINGS names another (a team's own list, or a test's).
FINDINGS = Path(os.environ.get("HFPROPS_FINDINGS") or Path(__file__).with_name("findings.toml"))
_ENTRIES = pytest.StashKey["list"]()
_ITEM_FINDINGS = pytest.StashKey["list"]()
_USER_PROPERTY = "hfprops_findings"
# finding key -> test ids that met it; filled from reports, so it also works on the xdist controller
_MET: dict[str, list[str]] = {}


def _patterns(value) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _any_match(names, patterns) -> bool:
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


@dataclass(frozen=True)
class Finding:
    component: str | tuple[str, ...]  # a pattern, or several (any of them)
    property: str | tuple[str, ...]
    reason: str
    input: str
    match: str = ".*"
    case: str = "*"
    versions: str = ""
    strict: bool = True
    models: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()  # the subject must have these (e.g. encoder_decoder)

    @property
    def key(self) -> str:
        """`component :: property[case]`, then what narrows the entry (capabilities, models, versions):
        entries about one shared component (`GenerationMixin`) differ only there, and the run's summary
        and the coverage report count each entry by its key."""
        component, prop = "|".join(_patterns(self.component)), "|".join(_patterns(self.property))
        narrowed = [f"capabilities {'+'.join(self.capabilities)}" if self.capabilities else "",
                    f"models {','.join(self.models)}" if self.models else "",
                    f"transformers {self.versions}" if self.versions else ""]
        return (f"{component} :: {prop}" + (f"[{self.case}]" if self.case != "*" else "")
                + "".join(f" ({n})" for n in narrowed if n))

    def applies_to_version(self, version: str) -> bool:
        if not self.versions:
            return True
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(self.versions).contains(version, prereleases=True)

    def matches_failure(self, message: str) -> bool:
        return re.search(self.match, message, re.S) is not None


def load_findings(path: Path | None = None) -> list[Finding]:
    """Every entry of the findings list, checked for the fields each must have."""
    path = path or FINDINGS
    with path.open("rb") as f:
        raw = tomllib.load(f).get("finding", [])
    findings = []
    for entry in raw:
        missing = [k for k in ("component", "property", "reason", "input") if not entry.get(k)]
        if missing:
            raise pytest.UsageError(f"{path.name}: an entry lacks {missing}: {entry}")
        entry = dict(entry)
        entry["models"] = tuple(entry.get("models", ()))
        entry["capabilities"] = tuple(entry.get("capabilities", ()))
        for key in ("component", "property"):
            if isinstance(entry[key], list):
                entry[key] = tuple(entry[key])
        findings.append(Finding(**entry))
    return findings


# -- what a subject is made of -----------------------------------------------------------------------
def _class_names(obj) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__ if cls is not object}


def _method_names(obj) -> set[str]:
    """`Class.method` for each method a transformers model class of `obj` defines itself."""
    return {f"{cls.__name__}.{name}" for cls in type(obj).__mro__ if cls.__module__.startswith("transformers.models.")
            for name, value in vars(cls).items() if inspect.isfunction(value)}


def _transformers_functions(module_name: str) -> set[str]:
    """`transformers.x.f` for each transformers function a modeling module defines or imports (the code it
    calls): `transformers.masking_utils.create_causal_mask`, or the module's own copy of a shared helper,
    `transformers.models.gemma2.modeling_gemma2.eager_attention_forward`."""
    module = sys.modules.get(module_name)
    names = set()
    for value in vars(module).values() if module else ():
        owner = getattr(value, "__module__", "") or ""
        if inspect.isfunction(value) and owner.startswith("transformers."):
            names.add(f"{owner}.{value.__name__}")
    return names


def _attention_implementations(model) -> set[str]:
    """`attn_implementation:<name>` for each attention implementation the model's configs select
    (`attn_implementation:eager` where eager is the default, as on the softcapping models)."""
    # model.modules() starts with the model itself; a planted torch model (nn.Sequential) has no config
    configs = [sub for module in model.modules() if (sub := getattr(module, "config", None)) is not None]
    return {f"attn_implementation:{impl}" for cfg in configs
            if isinstance(impl := getattr(cfg, "_attn_implementation", None), str)}


def components(subject) -> frozenset[str]:
    """Every component name a finding can be keyed by, for this subject (cached on it)."""
    cached = getattr(subject, "_components", None)
    if cached is not None:
        return cached
    names: set[str] = set()
    modules = set()
    for module in subject.model.modules():
        names |= _class_names(module) | _method_names(module)
        modules.add(type(module).__module__)
    for module_name in modules:
        if module_name.startswith("transformers.models."):
            names |= _transformers_functions(module_name)
    names |= _attention_implementations(subject.model)
    processor = subject.processor
    parts = [processor] + [getattr(processor, a, None) for a in ("tokenizer", "image_processor", "feature_extractor")]
    for part in filter(None, parts):
        names |= _class_names(part)
        backend = getattr(part, "backend_tokenizer", None)
        for piece in ("normalizer", "pre_tokenizer", "model", "post_processor", "decoder"):
            value = getattr(backend, piece, None) if backend is not None else None
            if value is not None:
                names.add(f"tokenizers.{type(value).__name__}")
    subject._components = frozenset(names)
    return subject._components


# -- matching tests --------------------------------------------------------------------------------
def _case_of(item, subject_name: str) -> str:
    """The test's parameters other than the subject (`RGBA` for `test_pixel_values[vit-RGBA]`)."""
    ident = item.callspec.id
    parts = ident.split("-")
    name_parts = subject_name.split("-")
    for start in range(len(parts) - len(name_parts) + 1):
        if parts[start:start + len(name_parts)] == name_parts:
            return "-".join(parts[:start] + parts[start + len(name_parts):])
    return ident


def findings_for(item, subject, version: str, entries: list[Finding]) -> list[Finding]:
    """The recorded findings that describe this test on this subject under this transformers release."""
    owned = components(subject)
    case = _case_of(item, subject.name)
    function = item.originalname
    return [
        f for f in entries
        if _any_match([function], _patterns(f.property))
        and fnmatch.fnmatchcase(case, f.case)
        and (not f.models or subject.name in f.models)
        and subject.spec.has(*f.capabilities)
        and f.applies_to_version(version)
        and _any_match(owned, _patterns(f.component))
    ]


def mark_findings(config, items, subject_of) -> None:
    """Mark each test that a recorded finding describes as xfail (strict on zoo models where the finding says so)."""
    import transformers

    entries = config.stash.setdefault(_ENTRIES, load_findings())
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or not isinstance(callspec.params.get("subject"), str):
            continue  # no subject, or an empty parameter set (no selected model has what the test needs)
        subject = subject_of(callspec.params["subject"])
        found = findings_for(item, subject, transformers.__version__, entries)
        if not found:
            continue
        item.stash[_ITEM_FINDINGS] = found
        strict = subject.spec.source == "zoo" and any(f.strict for f in found)
        reason = " | ".join(f"{f.key}: {f.reason} | shrunk input: {f.input}" for f in found)
        item.add_marker(pytest.mark.xfail(reason=reason, strict=strict))


def _failure_messages(error: BaseException) -> list[str]:
    """`Type: message` of each distinct failure (Hypothesis reports several as an exception group)."""
    if isinstance(error, BaseExceptionGroup):
        return [m for sub in error.exceptions for m in _failure_messages(sub)]
    return [f"{type(error).__name__}: {error}"]


def _is_recorded(error: BaseException, found: list[Finding]) -> bool:
    """Every failure `error` reports is one of the recorded findings `found`."""
    return all(any(f.matches_failure(m) for f in found) for m in _failure_messages(error))


# Shrinking a recorded finding again found nothing new and cost 44 % of the test time of a registry
# sweep shard (368 of 844 s; one MoE test shrank for 201 s). Hypothesis reads a test's settings from
# `_hypothesis_internal_use_settings` at each call (it has no public per-call override), so the
# shrink phase is left out of that attribute for the one call and restored after it.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    found = item.stash.get(_ITEM_FINDINGS, None)
    test = getattr(item, "obj", None)
    chosen = getattr(test, "_hypothesis_internal_use_settings", None)
    if not found or chosen is None or Phase.shrink not in chosen.phases or item.config.option.runxfail:
        return (yield)
    test._hypothesis_internal_use_settings = settings(chosen, phases=[p for p in chosen.phases if p is not Phase.shrink])
    try:
        return (yield)
    except Exception as error:
        if _is_recorded(error, found):
            raise
        unshrunk = error
    finally:
        test._hypothesis_internal_use_settings = chosen
    item.runtest()  # a new failure: searched again with shrinking, so it is reported shrunk
    raise unshrunk  # it did not fail again: report the failure as first found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    found = item.stash.get(_ITEM_FINDINGS, None)
    if not found or call.when != "call" or not hasattr(report, "wasxfail"):
        return
    if call.excinfo is None:
        return  # an xpass: pytest's strict/non-strict handling decides
    messages = _failure_messages(call.excinfo.value)
    met = [f for f in found if any(f.matches_failure(m) for m in messages)]
    if not _is_recorded(call.excinfo.value, found):
        report.outcome = "failed"
        keys = "; ".join(f"{f.key} (match {f.match!r})" for f in found)
        report.longrepr = (
            f"{report.longrepr}\n\nhfprops: this failure is NOT the recorded finding(s) {keys}: "
            f"it is new and stays red."
        )
        del report.wasxfail
        return
    report.user_properties.append((_USER_PROPERTY, [f.key for f in met]))


def pytest_runtest_logreport(report):
    for name, keys in report.user_properties:
        if name == _USER_PROPERTY:
            for key in keys:
                _MET.setdefault(key, []).append(report.nodeid)


def met_findings() -> dict[str, list[str]]:
    """Finding key -> ids of the tests of this run that met it."""
    return {key: list(ids) for key, ids in _MET.items()}


def pytest_terminal_summary(terminalreporter, config):
    if not _MET:
        return
    reasons = {f.key: f.reason for f in load_findings()}
    terminalreporter.section("hfprops: recorded upstream findings met in this run")
    for key, nodeids in sorted(_MET.items()):
        terminalreporter.write_line(f"{key}: {len(nodeids)} test(s): {reasons.get(key, '')}")
        for nodeid in nodeids[:5]:
            terminalreporter.write_line(f"    {nodeid}")
        if len(nodeids) > 5:
            terminalreporter.write_line(f"    ... and {len(nodeids) - 5} more")
