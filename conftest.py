"""pytest wiring for hfprops: Hypothesis profiles, command-line options, the models under test.

Models are pytest parameters (one session-scoped subject per model, built once per process);
inputs are Hypothesis draws. A property declares what it needs with `@pytest.mark.needs(...)`
(capabilities from `zoo.spec.CAPABILITIES`) and runs on every selected model that has them.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from properties.examples import CI_EXAMPLES  # tests with their own smaller counts scale against it

# Each concern's hooks and options live beside its code; conftest only loads them.
pytest_plugins = ["devices.plugin", "baselines.plugin", "baselines.quiet", "properties.artifacts", "properties.findings",
                  "properties.coverage", "properties.sharding"]


# -- threads: one per process by default; scale out with `-n auto` (pytest-xdist) ------------------
THREADS = int(os.environ.get("HFPROPS_THREADS", "1"))

import torch  # noqa: E402  (after reading the environment, before any model runs)

torch.set_num_threads(THREADS)

# -- Hypothesis profiles ---------------------------------------------------------------------------
_slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
# The explain phase re-runs a failing example many times to point at lines; on an xfailed model
# test it costs 5-30x the test itself (measured: 6.05 s vs 0.18 s), so only `exhaustive` runs it.
_no_explain = tuple(p for p in Phase if p is not Phase.explain)
settings.register_profile(
    "ci",
    parent=settings.get_profile("ci"),  # Hypothesis' own: derandomize, no deadline, print_blob
    max_examples=CI_EXAMPLES,
    derandomize=True,
    deadline=None,
    print_blob=True,
    database=None,
    phases=_no_explain,
    suppress_health_check=_slow_ok,
)
# The registry sweep (`--model registry`, all properties): ~1,100 ids x ~90 tests do not fit an hour
# on 2 cores at 25 examples each, nor at 3 (76 min, README "Sharding"); 2 cut a slice's test time by
# 27% (110 -> 80 s, shard 5/48), so the sweep cuts the examples per test, never the properties.
# Otherwise as `ci`.
SWEEP_EXAMPLES = 2
settings.register_profile("sweep", parent=settings.get_profile("ci"), max_examples=SWEEP_EXAMPLES)
# More models than this, and no profile named: `sweep`. `dev`'s 100 examples over the ~1,100 registry ids
# would take days on 2 cores, `ci`'s 25 most of one; a handful of ids (registry:llama*) keeps the default.
SWEEP_ABOVE = 50
settings.register_profile(
    "dev",
    max_examples=4 * CI_EXAMPLES,
    deadline=None,
    print_blob=True,
    database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
    phases=_no_explain,
    suppress_health_check=_slow_ok,
)
settings.register_profile(
    "exhaustive",
    max_examples=20 * CI_EXAMPLES,
    deadline=None,
    print_blob=True,
    database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
    phases=tuple(Phase),  # explicit, reuse, generate, target, shrink, explain
    suppress_health_check=_slow_ok,
)


def _default_profile() -> str:
    if "HYPOTHESIS_PROFILE" in os.environ:
        return os.environ["HYPOTHESIS_PROFILE"]
    from hypothesis._settings import is_in_ci

    return "ci" if is_in_ci() else "dev"


# `--hypothesis-profile` (Hypothesis' pytest plugin) overrides this in pytest_configure.
settings.load_profile(_default_profile())


# -- command line ----------------------------------------------------------------------------------
def pytest_addoption(parser):
    group = parser.getgroup("hfprops", "hfprops: models under test")
    group.addoption(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="model to test (repeatable): a zoo name, 'minilm', a checkpoint directory, or a hub id "
        "already in the local HF cache. Default: the whole zoo.",
    )
    group.addoption(
        "--allow-pickle",
        action="store_true",
        help="allow loading checkpoints whose only weights are pickle files (*.bin); off by default",
    )


def _mark_name(model_name: str) -> str:
    return re.sub(r"\W", "_", model_name)


def pytest_configure(config):
    import transformers

    from zoo.checkpoints import REAL_MODELS, ModelArgError, resolve_model_arg
    from zoo.registry import SubjectRegistry
    from zoo.tiny import ZOO_NAMES

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # 'Loading weights' bars would interleave with the report
    config.addinivalue_line("markers", "needs(*capabilities): run only on models with these capabilities")
    args = config.getoption("model") or list(ZOO_NAMES)
    try:
        from zoo.catalog import resolve_model_args  # registry[:GLOB|MODALITY][@VARIANTS] expands there

        refs = resolve_model_args(args, allow_pickle=config.getoption("allow_pickle"))
    except ModelArgError as exc:
        raise pytest.UsageError(str(exc)) from None
    for name in list(ZOO_NAMES) + list(REAL_MODELS) + [ref.name for ref in refs]:
        config.addinivalue_line("markers", f"{_mark_name(name)}: tests on the model {name}")
    config.stash[REGISTRY] = SubjectRegistry(refs)
    if len(refs) > SWEEP_ABOVE and not (config.getoption("--hypothesis-profile", None) or "HYPOTHESIS_PROFILE" in os.environ):
        settings.load_profile("sweep")
        config.stash[PROFILE_NOTE] = f" (chosen for {len(refs)} models; --hypothesis-profile overrides)"



REGISTRY = pytest.StashKey["SubjectRegistry"]()
PROFILE_NOTE = pytest.StashKey[str]()


def pytest_report_header(config):
    registry = config.stash.get(REGISTRY, None)
    names = ", ".join(registry.names()) if registry else "-"
    return [
        f"hfprops: profile={settings._current_profile}{config.stash.get(PROFILE_NOTE, '')}, torch threads={THREADS}, "
        f"torch {torch.__version__}, transformers {__import__('transformers').__version__}",
        f"hfprops: models: {names}",
        *(registry.header_notes() if registry else []),
    ]


def _subject_or_usage_error(config, name: str):
    from zoo.checkpoints import ModelArgError

    try:
        return config.stash[REGISTRY][name]
    except ModelArgError as exc:
        raise pytest.UsageError(str(exc)) from None
    except Exception as exc:  # a checkpoint that passed the checks but does not load
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise pytest.UsageError(f"--model {name}: could not load: {type(exc).__name__}: {first_line}") from None


def pytest_generate_tests(metafunc):
    if "subject" not in metafunc.fixturenames:
        return
    needs = [cap for mark in metafunc.definition.iter_markers("needs") for cap in mark.args]
    registry = metafunc.config.stash[REGISTRY]
    params = []
    from zoo.catalog import catalog_param, is_catalog_ref

    for name in registry.names():
        if is_catalog_ref(registry.refs[name]):  # built on first use (pytest_runtest_setup), not here
            params.append(catalog_param(name))
            continue
        spec = _subject_or_usage_error(metafunc.config, name).spec
        if spec.has(*needs):
            marks = [getattr(pytest.mark, _mark_name(name)), getattr(pytest.mark, spec.modality)]
            params.append(pytest.param(name, marks=marks, id=name))
    if not params:  # say why instead of pytest's "got empty parameter set"
        reason = f"no selected model has {' + '.join(needs)}"
        params = [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-model")]
    metafunc.parametrize("subject", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def subject(request):
    """The model under test (built once per session), wrapped with its calling convention."""
    return _subject_or_usage_error(request.config, request.param)


def pytest_collection_modifyitems(config, items):
    from properties.findings import mark_findings

    from zoo.catalog import is_catalog_ref

    registry = config.stash[REGISTRY]
    built_now = [i for i in items if not is_catalog_ref(registry.refs.get(getattr(getattr(i, "callspec", None), "params", {}).get("subject")))]
    mark_findings(config, built_now, lambda name: _subject_or_usage_error(config, name))


def pytest_runtest_setup(item):
    """Catalogue models (`--model registry...`) are built, smoked and matched to findings here."""
    from properties.findings import mark_findings
    from zoo.catalog import setup_catalog_item

    setup_catalog_item(item, item.config.stash[REGISTRY], mark_findings)
