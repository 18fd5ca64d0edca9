"""Command-line flags declared on the config dataclasses themselves.

A field written as ``max_batch_size: int = flag(32, "Images per device batch")`` is both the
dataclass default and the flag ``--max_batch_size`` with that default and help, so neither
is typed twice. ``Config.from_args(args)`` builds the config from the parsed flags; the
config's own ``__post_init__`` states the rules, once.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

_FLAG = "flag"

C = TypeVar("C", bound="FlagConfig")


@dataclasses.dataclass(frozen=True)
class _Flag:
    help: str
    parse: Callable[[str], Any] | None
    choices: tuple[str, ...] | None


def flag(
    default: Any,
    help: str,
    *,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field that is also a flag. `parse` turns the flag's text into the value
    (default: the type of `default`); a bool default makes a switch (``--x``, or ``--no_x``
    when the default is True)."""
    return dataclasses.field(default=default, metadata={_FLAG: _Flag(help, parse, choices)})


def int_tuple(text: str) -> tuple[int, ...]:
    """Comma-separated integers, e.g. ``1,8,64``."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


class FlagConfig:
    """Mixin for frozen config dataclasses whose fields are declared with `flag`."""

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser, title: str | None = None) -> None:
        group = parser.add_argument_group(title) if title else parser
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            spec = field.metadata.get(_FLAG)
            if spec is None:
                continue
            if field.default is True:
                # "(default: True)" after --no_x would read as if the flag were on by default.
                text = f"{spec.help} ({field.name}=%(default)s without this flag)"
                group.add_argument(f"--no_{field.name}", dest=field.name, action="store_false", help=text)
                continue
            if field.default is False:
                group.add_argument(f"--{field.name}", action="store_true", help=spec.help)
                continue
            parse = spec.parse or type(field.default)
            group.add_argument(
                f"--{field.name}", type=parse, default=field.default, choices=spec.choices, help=spec.help
            )

    @classmethod
    def from_args(cls: type[C], args: argparse.Namespace) -> C:
        """The config from parsed flags. A field without a flag of its own takes a flag another
        config declares under the same name (the engine's max_batch_size is the batcher's)."""
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        return cls(**{f.name: getattr(args, f.name) for f in fields if f.init and hasattr(args, f.name)})
