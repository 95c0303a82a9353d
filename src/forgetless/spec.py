"""One strict grammar for every spec string a user types (issue 18).

Each parser accepts exactly one spelling and turns anything else into a one-line ``UsageError``
that names the option, shows what was typed and, when one can be derived, the closest valid
spelling (``difflib`` for names; for shapes, the input with the stray characters removed).
Nothing here is loose: no silent stripping of spaces, no empty parts skipped, no value kept as a
string because it failed to parse as the number it looks like.

Grammars (``INT`` = ``[0-9]+``, ``NAME`` = ``[a-z][a-z0-9-]*``):

    strategy   NAME ('+' NAME)*                        every NAME a registered strategy, none twice
    model      'mlp' [':' [INT (',' INT)*]] | 'cnn' | ('resnet18'|'resnet20'|'resnet32') [':nf=' INT]
               | 'keras:' MODULE ':' IDENT             (MODULE a dotted Python module name)
               | 'custom:' IDENT                       (recorded for a model object; never built)
    classes    INT (',' INT)* ('|' INT (',' INT)*)*
    angles     NUMBER (',' NUMBER)*                     finite numbers
    data_dir   DIR | NAME '=' DIR (',' NAME '=' DIR)*   DIR non-empty, no surrounding spaces, NAME a dataset
    param key  [NAME '.'] IDENT                         (IDENT = [a-z_][a-z0-9_]*)
    param value  true|false|yes|no|on|off | none|null | INT | finite FLOAT | TEXT
               TEXT must not look like a number (``1e``, ``1.2.3``), start with '=' or have spaces around it
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from typing import Any

from .errors import UsageError

NAME = r"[a-z][a-z0-9-]*"
IDENT = r"[a-z_][a-z0-9_]*"
_STRATEGY = re.compile(rf"{NAME}(\+{NAME})*")
_INT = r"[0-9]+"
_CLASSES = re.compile(rf"{_INT}(,{_INT})*(\|{_INT}(,{_INT})*)*")
_NUMBER = r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_MLP = re.compile(rf"mlp(:({_INT}(,{_INT})*)?)?")
_RESNET = re.compile(rf"(resnet18|resnet20|resnet32)(:nf={_INT})?")
_KERAS = re.compile(r"keras:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
_CUSTOM = re.compile(r"custom:[A-Za-z_][A-Za-z0-9_.]*")
_PARAM_KEY = re.compile(rf"({NAME}\.)?{IDENT}")
_LOOKS_NUMERIC = re.compile(r"[+-]?[0-9.]+([eE][+-]?[0-9.]*)?")
MODEL_KINDS = ("mlp", "cnn", "resnet18", "resnet20", "resnet32", "keras")


def _suggest(typed: str, fixed: str | None) -> str:
    return f" (did you mean {fixed!r}?)" if fixed and fixed != typed else ""


def _nearest(name: str, choices: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return match[0] if match else None


# ---- strategies ---------------------------------------------------------------------------------


def parse_strategy(text: Any, names: Iterable[str] | None = None) -> list[str]:
    """``'er+ewc'`` -> ``['er', 'ewc']``; every malformed or unknown spelling is a one-line error."""
    if names is None:
        from .strategies import STRATEGIES

        names = STRATEGIES
    names = list(names)
    if not isinstance(text, str) or not text:
        raise UsageError(
            f"--strategy {text!r}: give a strategy name, or several joined by '+' (e.g. er+ewc); see `forgetless list`"
        )
    pieces = [p.lower() for p in re.split(r"[+,;&\s]+", text) if p]
    fixed = "+".join(n if n in names else (_nearest(n, names) or n) for n in pieces)
    if not _STRATEGY.fullmatch(text):
        what = (
            "an empty part between '+' signs"
            if "" in text.split("+")
            else "spaces"
            if any(c.isspace() for c in text)
            else "upper-case letters"
            if text != text.lower()
            else "characters that are not part of a name"
        )
        raise UsageError(f"--strategy {text!r} has {what}: write NAME or NAME+NAME{_suggest(text, fixed)}")
    parts = text.split("+")
    for n in parts:
        if n not in names:
            near = _nearest(n, names)
            raise UsageError(
                f"unknown strategy {n!r}{f' (did you mean {near!r}?)' if near else ''}; see `forgetless list`"
            )
    if len(set(parts)) != len(parts):
        raise UsageError(
            f"{text}: a strategy appears twice; compose different strategies"
            f"{_suggest(text, '+'.join(dict.fromkeys(parts)))}"
        )
    return parts


# ---- models -------------------------------------------------------------------------------------


def parse_model(text: Any) -> str:
    """Check ``--model`` against the grammar above; returns it unchanged."""
    if not isinstance(text, str):
        raise UsageError(
            f"--model {text!r}: write mlp:W1,W2,..., cnn, resnet18[:nf=N], resnet20, resnet32 "
            f"or keras:package.module:function"
        )
    if (
        _MLP.fullmatch(text)
        or text == "cnn"
        or _RESNET.fullmatch(text)
        or _KERAS.fullmatch(text)
        or _CUSTOM.fullmatch(text)
    ):
        return text
    compact = re.sub(r"\s+", "", text)
    kind, _sep, rest = compact.partition(":")
    kind = kind.lower()
    known = kind in MODEL_KINDS
    if not known:
        kind = _nearest(kind, MODEL_KINDS) or kind
    fixed, why = (
        None,
        (
            "use mlp:W1,W2,... (e.g. mlp:1024,512,256), cnn, resnet18[:nf=N], resnet20 or resnet32 "
            "(a Keras model: keras:package.module:function)"
        ),
    )
    if kind == "mlp":
        widths = [re.sub(r"[^0-9]", "", w) for w in rest.split(",")]
        fixed = "mlp:" + ",".join(w for w in widths if w)
        if known:
            why = "hidden widths must be integers separated by single commas, e.g. mlp:1024,512,256"
    elif kind == "cnn":
        fixed = "cnn"
        if known:
            why = "cnn takes no options"
    elif kind in ("resnet18", "resnet20", "resnet32"):
        digits = re.sub(r"[^0-9]", "", rest)
        fixed = f"{kind}:nf={digits}" if digits and known else kind
        if known:
            why = f"write {kind} or {kind}:nf=N with N a positive integer (e.g. resnet18:nf=20)"
    elif kind == "keras" and known:
        why = "write keras:package.module:function (function(input_shape, n_outputs) returns a keras.Model)"
    if fixed is not None and not (_MLP.fullmatch(fixed) or _RESNET.fullmatch(fixed) or fixed == "cnn"):
        fixed = None
    if not known:
        raise UsageError(f"unknown model {text!r}{_suggest(text, fixed)}; {why}")
    raise UsageError(f"--model {text!r}: {why}{_suggest(text, fixed)}")


# ---- classes, angles, data directories ----------------------------------------------------------


def parse_classes(text: Any) -> list[list[int]]:
    """``'0,2,4|1,3,5'`` -> ``[[0, 2, 4], [1, 3, 5]]``."""
    if not isinstance(text, str):
        raise UsageError(
            f"--classes {text!r}: write comma-separated class numbers, groups separated by '|', "
            f'e.g. "0,2,4,6,8|1,3,5,7,9"'
        )
    if not _CLASSES.fullmatch(text):
        groups = [",".join(c for c in (re.sub(r"[^0-9]", "", v) for v in g.split(",")) if c) for g in text.split("|")]
        fixed = "|".join(g for g in groups if g)
        what = (
            "an empty class group"
            if any(not g.strip() for g in text.split("|"))
            else "an empty class number"
            if any(not v.strip() for g in text.split("|") for v in g.split(","))
            else "spaces"
            if any(c.isspace() for c in text)
            else "something that is not a class number"
        )
        raise UsageError(
            f"--classes {text!r} has {what}: write comma-separated class numbers, groups separated "
            f"by '|', e.g. \"0,2,4,6,8|1,3,5,7,9\"{_suggest(text, fixed or None)}"
        )
    return [[int(c) for c in g.split(",")] for g in text.split("|")]


def parse_angles(text: Any) -> list[float]:
    """``'0,45,90'`` (or a list of numbers) -> ``[0.0, 45.0, 90.0]``; every angle a finite number."""
    if isinstance(text, (list, tuple)):
        out = []
        for v in text:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise UsageError(f"angles {list(text)!r}: every angle must be a finite number of degrees, got {v!r}")
            out.append(float(v))
        if not out:
            raise UsageError("angles: give at least one angle, e.g. 0,45,90")
        return out
    if not isinstance(text, str):
        raise UsageError(f"--angles {text!r}: write comma-separated numbers of degrees, e.g. 0,45,90")
    items = text.split(",")
    if all(_NUMBER_RE.fullmatch(v) for v in items):
        values = [float(v) for v in items]
        if not all(math.isfinite(v) for v in values):  # (1e400 overflows to inf)
            raise UsageError(f"--angles {text!r}: every angle must be a finite number of degrees")
        return values
    good = [v.strip() for v in items if _NUMBER_RE.fullmatch(v.strip())]
    bad = next(v for v in items if not _NUMBER_RE.fullmatch(v))
    what = "an empty item" if not bad.strip() else "spaces" if bad.strip() != bad else f"{bad!r}, not a number"
    raise UsageError(
        f"--angles {text!r} has {what}: write comma-separated numbers of degrees, e.g. 0,45,90"
        f"{_suggest(text, ','.join(good) or None)}"
    )


def parse_data_dir(text: Any, datasets: Iterable[str] | None = None):
    """``'DIR'`` -> ``'DIR'``; ``'mnist=A,digits=B'`` (or such a dict) -> ``{'mnist': 'A', 'digits': 'B'}``."""
    if datasets is None:
        from .data.sources import DATASETS

        datasets = DATASETS
    datasets = list(datasets)
    usage = f"write DIR or NAME=DIR,NAME=DIR with NAME one of {', '.join(datasets)}"
    if text is None:
        return None
    if isinstance(text, dict):
        for name, d in text.items():
            if name not in datasets:
                near = _nearest(str(name), datasets)
                raise UsageError(
                    f"data_dir: unknown dataset {name!r}{f' (did you mean {near!r}?)' if near else ''}; {usage}"
                )
            if not isinstance(d, str) or not d or d != d.strip():
                raise UsageError(
                    f"data_dir: the folder of {name} must be a non-empty path without spaces around it, got {d!r}"
                )
        return dict(text)
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"--data-dir {text!r}: give a folder; {usage}")
    if text != text.strip():
        raise UsageError(f"--data-dir {text!r} has spaces around it{_suggest(text, text.strip())}")
    if "=" not in text:
        return text
    out: dict[str, str] = {}
    pairs = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        near = key if key in datasets else _nearest(key.strip().lower(), datasets)
        if near and value.strip():
            pairs.append(f"{near}={value.strip()}")
        if not sep or key not in datasets or not value or value != value.strip() or key in out:
            what = (
                "an empty item"
                if not part
                else f"{key!r} twice"
                if key in out
                else f"no folder for {key!r}"
                if sep and key in datasets and not value
                else f"spaces in {part!r}"
                if key in datasets
                else f"unknown dataset {key!r}"
            )
            raise UsageError(
                f"--data-dir {text!r} has {what}: {usage}"
                f"{_suggest(text, ','.join(dict.fromkeys(pairs)) if pairs else None)}"
            )
        out[key] = value
    return out


# ---- --param keys and values --------------------------------------------------------------------

_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False, "none": None, "null": None}


def parse_value(text: str, what: str = "value") -> Any:
    """A typed value: ``'10'`` -> 10, ``'0.5'`` -> 0.5, ``'true'`` -> True, ``'none'`` -> None, other
    words stay strings. Strict: empty values, spaces around, a leading '=', numbers that do not parse
    (``1e``, ``1.2.3``) and non-finite numbers are one-line errors."""
    if text == "":
        raise UsageError(f"{what}: the value is empty; write KEY=VALUE, e.g. lam=100")
    if text != text.strip():
        raise UsageError(f"{what}: {text!r} has spaces around it{_suggest(text, text.strip())}")
    if text.startswith("="):
        raise UsageError(
            f"{what}: {text!r} starts with '=': write KEY=VALUE with one '='{_suggest(text, text.lstrip('='))}"
        )
    low = text.lower()
    if low in _WORDS:
        return _WORDS[low]
    if low in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
        raise UsageError(f"{what}: {text!r} is not a finite number; give a finite value")
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    if _NUMBER_RE.fullmatch(text):
        if not math.isfinite(float(text)):  # (1e400 overflows to inf)
            raise UsageError(f"{what}: {text!r} is too large: give a finite value")
        return float(text)
    if _LOOKS_NUMERIC.fullmatch(text) and any(c.isdigit() for c in text):
        fixed = None
        for cand in (text + "0", text.rstrip("eE+-."), re.sub(r"\.(?=.*\.)", "", text)):
            if _NUMBER_RE.fullmatch(cand):
                fixed = cand
                break
        raise UsageError(f"{what}: {text!r} is not a number{_suggest(text, fixed)}")
    return text


def parse_param(item: Any, option: str = "--param") -> tuple[str, Any]:
    """``'lam=100'`` -> ``('lam', 100)``; ``'ewc.lam=100'`` -> ``('ewc.lam', 100)``."""
    if not isinstance(item, str):
        raise UsageError(f"{option} {item!r}: write KEY=VALUE, e.g. {option} lam=100")
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{option} {item!r}: write KEY=VALUE, e.g. {option} lam=100")
    check_param_key(key, option)
    return key, parse_value(value, f"{option} {item!r}")


def check_param_key(key: Any, option: str = "--param") -> str:
    """``key`` if it is NAME or PART.NAME (lower case, no spaces); else a one-line error with the fix."""
    if not isinstance(key, str) or not _PARAM_KEY.fullmatch(key):
        text = str(key)
        fixed = ".".join(p for p in re.sub(r"\s+", "", text).lower().split(".") if p)
        fixed = fixed if _PARAM_KEY.fullmatch(fixed) else None
        raise UsageError(f"{option} key {text!r}: write NAME or PART.NAME (e.g. lam, ewc.lam){_suggest(text, fixed)}")
    return key


def check_param_value(key: str, value: Any) -> Any:
    """A value given in Python or a grid file: numbers must be finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"parameter {key!r}: {value!r} is not a finite number; give a finite value")
    return value


__all__ = [
    "check_param_key",
    "check_param_value",
    "parse_angles",
    "parse_classes",
    "parse_data_dir",
    "parse_model",
    "parse_param",
    "parse_strategy",
    "parse_value",
]
