"""The request options on the command line, built from `acesteps.options.GenerationOptions`.

Each field becomes an argument: a required one (the prompt) a positional, the others
``--kebab-case`` of their API name (``--duration``, ``--tags``), typed from the field's
annotation (numbers, ``choices`` for a literal, comma-separated text for a tuple, ``--x`` /
``--no-x`` for a flag) with the field's description as help. Options the user does not give
are not sent, so the server's defaults apply; the server validates the values.
"""

from __future__ import annotations

import argparse
import math
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from acesteps.options import GenerationOptions, api_name

__all__ = ["add_option_arguments", "flag_of", "options_body"]


def flag_of(field: str) -> str:
    """``--time-signature`` for field ``time_signature`` (API name ``timeSignature``)."""
    return "--" + re.sub(r"([A-Z])", r"-\1", api_name(field)).lower().replace("_", "-")


def _number(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        value = kind(text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _unwrap(annotation: Any) -> Any:
    """The annotation without ``Annotated`` and ``| None``."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return _unwrap(rest[0])
    return annotation


def _kind(field: FieldInfo) -> dict[str, Any]:
    """argparse keywords for a field's type."""
    annotation = _unwrap(field.annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float):
        return {"type": _number(annotation)}
    if get_origin(annotation) is Literal:
        choices = list(get_args(annotation))
        kinds = {type(choice) for choice in choices}
        parse = kinds.pop() if len(kinds) == 1 else str  # "3" -> 3 for a literal of numbers
        return {"choices": choices, "type": parse}
    if get_origin(annotation) in (tuple, list):
        return {"type": _comma_list, "metavar": "A,B,..."}
    return {"type": str}


def _help(field: FieldInfo) -> str:
    text = field.description or ""
    if not field.is_required() and field.default not in (None, "", ()):
        text += f" (default {field.default})"
    return text


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One argument per `GenerationOptions` field (see the module docstring)."""
    for name, field in GenerationOptions.model_fields.items():
        if field.is_required():
            parser.add_argument(name, help=_help(field), **_kind(field))
        else:
            parser.add_argument(
                flag_of(name), dest=name, default=None, help=_help(field), **_kind(field)
            )


def options_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request body (API names) of the options given on the command line."""
    return {
        api_name(name): getattr(args, name)
        for name in GenerationOptions.model_fields
        if getattr(args, name, None) is not None
    }
