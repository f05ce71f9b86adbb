"""The `faceaudit` command: the app, assembled from one module per command group. Only this
module knows every command; the command modules import the shared helpers
(faceaudit.cli.common, help, checks), never the app or each other."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from faceaudit.cli import (
    evaluate,
    index,
    packs,
    removals,
    report,
    research,
    search,
    serve,
    thresholds,
)
from faceaudit.cli.help import MARKUP_MODE, HelpGroup

__all__ = ["app"]

app = typer.Typer(
    help="Find the photos of a dataset in which a person appears, from one selfie.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=HelpGroup,
    rich_markup_mode=MARKUP_MODE,
)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


app.command("report")(report.report)
app.command("build-index")(index.build_index_command)
app.command("index", cls=index.OptionalRayAddress)(index.index)
app.command("search")(search.search)
app.command("serve")(serve.serve)
app.command("models")(packs.list_models)
app.command("demo")(serve.demo)
app.command("eval")(evaluate.eval_command)
app.command("thresholds")(thresholds.thresholds)
app.add_typer(removals.group, name="removals")
# cluster and cohort join as a group without a name: Typer lists groups after commands, so
# `faceaudit --help` keeps its order.
research_commands = typer.Typer(cls=HelpGroup, rich_markup_mode=MARKUP_MODE)
research_commands.command("cluster")(research.cluster)
research_commands.command("cohort")(research.cohort)
app.add_typer(research_commands)
