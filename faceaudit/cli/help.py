"""How `faceaudit ... --help` reads: each option's value named in capitals (``--out PATH``,
``--workers INTEGER``), nothing after a flag, and help texts wrapped to the terminal.

Typer shows the Python type of a parameter without a metavar (``<bool>``, ``<list[Path]>``);
``HelpGroup`` gives each one a metavar before the help is drawn. The apps use Markdown help
(``rich_markup_mode="markdown"``) because it joins the lines of a docstring's paragraph, where
Rich markup keeps each source line break, so the help broke mid-sentence.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args, get_origin

from typer.core import TyperArgument, TyperGroup

MARKUP_MODE: Final[Literal["markdown"]] = "markdown"
_TYPE_NAMES = {"Path": "PATH", "int": "INTEGER", "float": "FLOAT", "str": "TEXT"}


def _value_name(param: Any) -> str:
    """PATH, INTEGER, FLOAT or TEXT from the parameter's annotation, else its name."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    while get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    return _TYPE_NAMES.get(getattr(annotation, "__name__", ""), (param.name or "").upper())


def _no_type(ctx: Any) -> None:
    return None


def tidy_params(command: Any, ctx: Any) -> None:
    """Give every parameter of ``command`` (its --help too) a metavar: none for a flag, the
    argument's name in capitals (its type column left empty), the value's kind for an option."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif isinstance(param, TyperArgument):
            param.metavar = param.metavar or (param.name or "").upper()
            param.display_type_rich = _no_type  # type: ignore[method-assign]
        elif param.metavar is None:
            param.metavar = _value_name(param)


class HelpGroup(TyperGroup):
    """A command group whose help, and its commands' help, show no Python types."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            tidy_params(command, ctx)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        tidy_params(self, ctx)
        super().format_help(ctx, formatter)
