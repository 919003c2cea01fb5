"""Config strategies: draw the flags and sizes that change a model's forward, shrinking to its default.

`dimensions(config_class, defaults)` discovers what can vary from the config class itself
(`inspect.signature(ConfigClass.__init__)`, sub-configs included as `text_config.<name>`):

- every boolean argument;
- every string argument whose default is an activation name (`transformers.activations.ACT2FN`):
  its valid values are ACT2FN's keys;
- structural sizes by name (`config_rules.NAME_ROLES`): layer counts, head counts dividing the
  width, feed-forward sizes, norm eps;

and completes them with the per-family table `config_rules.FAMILY_RULES`. Arguments in
`config_rules.NOT_DRAWN` and the base `PreTrainedConfig` arguments are left alone.

`config_overrides(config_class, defaults)` draws `{dotted name: value}` for a subset of those
dimensions. Each dimension is drawn as `None | value` with None meaning "the default" (and dropped
from the result), and a drawn value always differs from the default, so Hypothesis shrinks every
failure toward the family's default config and the shrunk overrides name the flags that matter.
Plain data in (a class name and the default kwargs), a strategy out; no model is built here.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from hypothesis import strategies as st

from strategies import config_rules as rules


@dataclass(frozen=True)
class Dimension:
    """One config argument a strategy may change: its dotted name, its values and where they came from."""

    name: str  # "n_head", or "text_config.hidden_act" inside a sub-config
    values: tuple | Callable[[dict], tuple]  # a function of the effective (sub-)config kwargs drawn so far
    source: str  # "boolean", "activation", "size", "eps" or "family rule"

    def options(self, effective: dict, default: Any) -> tuple:
        values = self.values(effective) if callable(self.values) else self.values
        return tuple(v for v in values if v != default)


def _config_class(name_or_class):
    if isinstance(name_or_class, str):
        import transformers

        return getattr(transformers, name_or_class)
    return name_or_class


def _activations() -> tuple[str, ...]:
    from transformers.activations import ACT2FN

    return tuple(sorted(ACT2FN))


def _base_arguments() -> frozenset[str]:
    from transformers import PretrainedConfig

    return frozenset(inspect.signature(PretrainedConfig.__init__).parameters)


def _width(defaults: dict) -> int | None:
    return next((defaults[n] for n in rules.WIDTH_NAMES if isinstance(defaults.get(n), int)), None)


def _heads(config: dict) -> tuple[int, ...]:
    width = _width(config)
    return tuple(d for d in range(1, width + 1) if width % d == 0 and width // d >= rules.MIN_HEAD_DIM)


def _discovered(cls, defaults: dict, prefix: str) -> list[Dimension]:
    found = []
    base, activations = _base_arguments(), _activations()
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in base or name in rules.NOT_DRAWN or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        default = defaults.get(name, param.default)
        role = rules.NAME_ROLES.get(name)
        if isinstance(default, bool):
            found.append(Dimension(prefix + name, (False, True), "boolean"))
        elif isinstance(default, str) and default in activations:
            found.append(Dimension(prefix + name, activations, "activation"))
        elif role == "layers" and name in defaults:
            found.append(Dimension(prefix + name, rules.LAYERS, "size"))
        elif role == "heads" and name in defaults and _width(defaults):
            found.append(Dimension(prefix + name, _heads, "size"))
        elif role == "ffn" and name in defaults:
            found.append(Dimension(prefix + name, rules.FFN_SIZES, "size"))
        elif role == "eps":
            found.append(Dimension(prefix + name, rules.EPS_VALUES, "eps"))
    return found


def _dimensions(cls, defaults: dict, prefix: str = "") -> list[Dimension]:
    dims = _discovered(cls, defaults, prefix)
    for name, values in rules.FAMILY_RULES.get(cls.__name__, {}).items():
        dims = [d for d in dims if d.name != prefix + name]  # the table refines what discovery found
        dims.append(Dimension(prefix + name, values, "family rule"))
    for key, sub_cls in (getattr(cls, "sub_configs", None) or {}).items():
        if isinstance(defaults.get(key), dict):
            dims += _dimensions(sub_cls, defaults[key], prefix=f"{key}.")
    return dims


@lru_cache(maxsize=None)
def _cached_dimensions(class_name: str, defaults_json: str) -> tuple[Dimension, ...]:
    return tuple(_dimensions(_config_class(class_name), json.loads(defaults_json)))


def dimensions(config_class, defaults: dict) -> tuple[Dimension, ...]:
    """Every config dimension drawn for `config_class` (a class or its name) around `defaults`."""
    cls = _config_class(config_class)
    return _cached_dimensions(cls.__name__, json.dumps(defaults, sort_keys=True, default=str))


def _get(config: dict, dotted: str, default: Any = None) -> Any:
    *parents, leaf = dotted.split(".")
    for parent in parents:
        config = config.get(parent) or {}
    return config.get(leaf, default)


def apply_overrides(defaults: dict, overrides: dict) -> dict:
    """The default kwargs with `{dotted name: value}` overrides applied (a new, nested dict)."""
    merged = _deep_copy(defaults)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        target = merged
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return merged


def _deep_copy(value):
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _signature_default(cls, dotted: str) -> Any:
    *parents, leaf = dotted.split(".")
    for parent in parents:
        cls = cls.sub_configs[parent]
    param = inspect.signature(cls.__init__).parameters.get(leaf)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


@st.composite
def config_overrides(draw, config_class, defaults: dict, *, only: tuple[str, ...] | None = None,
                     together: tuple[tuple[str, ...], ...] = ()):
    """`{dotted name: value}`: some dimensions of `config_class` changed from `defaults`.

    Each dimension is `None` (keep the default; shrinks there) or one value other than the
    default; `only` restricts the draw to the named dimensions; each group of `together` (e.g.
    `config_rules.DRAWN_TOGETHER`) is drawn once, its first name's value set on every name. Dependent
    values (kv heads of the drawn head count) are computed from the config drawn so far.
    """
    cls = _config_class(config_class)
    overrides: dict[str, Any] = {}
    follows = {name: group[0] for group in together for name in group[1:]}
    for dim in dimensions(cls, defaults):
        if only is not None and dim.name not in only:
            continue
        if dim.name in follows:  # set with the first name of its group
            continue
        effective = apply_overrides(defaults, overrides)
        prefix, _, leaf = dim.name.rpartition(".")
        scope = _get(effective, prefix) if prefix else effective
        full_scope = {**_signature_defaults(cls, prefix), **scope}
        default = full_scope.get(leaf, _signature_default(cls, dim.name))
        options = dim.options(full_scope, default)
        if not options:
            continue
        if callable(dim.values) and default is not None and default not in dim.values(full_scope):
            # the drawn config rules the default out (kv heads 2 of 1 head): a value is required
            overrides[dim.name] = draw(st.sampled_from(options), label=dim.name)
            continue
        value = draw(st.none() | st.sampled_from(options), label=dim.name)
        if value is not None:
            overrides[dim.name] = value
    for follower, leader in follows.items():
        if leader in overrides and any(d.name == follower for d in dimensions(cls, defaults)):
            overrides[follower] = overrides[leader]
    return overrides


@lru_cache(maxsize=None)
def _signature_defaults_cached(class_name: str, prefix: str) -> str:
    cls = _config_class(class_name)
    for parent in filter(None, prefix.split(".")):
        cls = cls.sub_configs[parent]
    out = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if param.default is not inspect.Parameter.empty and isinstance(param.default, (bool, int, float, str)):
            out[name] = param.default
    return json.dumps(out)


def _signature_defaults(cls, prefix: str) -> dict:
    return json.loads(_signature_defaults_cached(cls.__name__, prefix))


def describe(config_class, defaults: dict) -> dict[str, list[str]]:
    """The dimensions of a config class by source, for documentation (the README table)."""
    out: dict[str, list[str]] = {}
    for dim in dimensions(config_class, defaults):
        out.setdefault(dim.source, []).append(dim.name)
    return out
