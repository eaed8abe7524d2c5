"""`qp train`: the training chain in-process (chain, quick, one stage, ablations) and the model registry.

Thin: options are parsed here, the work is ``qp_core.training`` (``run``, ``stages``, ``ablation``). The Airflow DAG runs the same
stage functions one per task through ``jobs/<stage>.py``.
"""

from __future__ import annotations

import json
import time
from typing import Optional

import typer

app = typer.Typer(help="Training chain: aux data, SFT, GRPO filter, GRPO, evaluation, promotion.", no_args_is_help=True)


def _console():
    from rich.console import Console

    return Console()


def _ctx(section, profile, run_id, dt, fresh, context=True, console=None, overrides=None):
    from qp_core.training.run import make_context

    console = console or _console()
    from qp_core.ops.process import apply_env_defaults

    apply_env_defaults(OMP_NUM_THREADS="1")
    return make_context(section, profile=profile, run_id=run_id, dt=dt, fresh=fresh,
                        overrides={**(overrides or {}), **({} if context else {"context": False})},
                        progress=lambda m: console.log(m, markup=False))


def _print_reports(console, ctx, info) -> None:
    report = (info.get("evaluate") or {}).get("report") or {}
    console.rule("reports")
    for key in ("json", "md", "loss_png", "metrics_png"):
        if key in report:
            console.print(f"{key:12s} {report[key]}")
    promo = info.get("promote")
    if promo:
        console.print(f"model {promo.get('version')} ({promo.get('stage')}): "
                      f"{'PROMOTED to production' if promo.get('promoted') else 'not promoted'} — {'; '.join(promo.get('gate', []))}")
    times = {k: v.get("wall_s") for k, v in info.items() if isinstance(v, dict) and v.get("wall_s") is not None}
    console.print("wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))


@app.command()
def chain(
    profile: str = typer.Option("tiny", help="Model profile (conf/profiles/<name>.yaml)."),
    section: Optional[str] = typer.Option(None, help="conf/training.yaml section (default: named like the profile)."),
    run_id: Optional[str] = typer.Option(None, help="Run folder under $QP_HOME/training/runs (default <section>-<dt>)."),
    dt: Optional[str] = typer.Option(None, help="Run date (default: newest raw/query_log partition)."),
    stages: Optional[str] = typer.Option(None, help="Comma-separated subset of stages, in chain order."),
    fresh: bool = typer.Option(False, help="Delete the run folder first (otherwise finished stages are skipped)."),
    eval_base: bool = typer.Option(False, help="Also evaluate the stage-0 base model."),
    context: bool = typer.Option(True, help="--no-context: prompts without history/notes (ablation)."),
    airflow: bool = typer.Option(False, "--airflow", help="Run the DAG qp_training_chain through Airflow "
                                 "(`airflow dags test` in the local AIRFLOW_HOME) instead of in-process (`make train`)."),
) -> None:
    """Run the whole chain stage by stage and print the report paths (`make train`)."""
    from qp_core.training.stages import run_chain

    console = _console()
    t0 = time.time()
    if airflow:
        raise typer.Exit(_chain_through_airflow(console, profile, dt, t0))
    ctx = _ctx(section, profile, run_id, dt, fresh, context, console)
    console.rule(f"training chain — run {ctx.run_id} ({ctx.settings.profile}, section {ctx.settings.section})")
    info = run_chain(ctx, stages.split(",") if stages else None, evaluate={"include_base": eval_base})
    _print_reports(console, ctx, info)
    console.print(f"run folder   {ctx.run_dir}\ntotal        {time.time() - t0:.0f}s")


def _chain_through_airflow(console, profile: str, dt: Optional[str], t0: float) -> int:
    """One run of the DAG qp_training_chain (each stage a task running ``python -m jobs.<stage>``)."""
    import datetime as _dt

    from qp_core.ops import airflow_local
    from qp_core.training.run import ensure_world, training_root

    ensure_world()
    logical = dt or _dt.date.today().isoformat()
    console.rule(f"training chain through Airflow — qp_training_chain {logical} (profile {profile})")
    state = airflow_local.dags_test("qp_training_chain", logical, {"profile": profile})
    runs = sorted((training_root() / "runs").glob("*"), key=lambda p: p.stat().st_mtime)
    console.rule("reports")
    if runs:
        for name in ("report.json", "report.md", "loss_curves.png", "metrics.png"):
            for path in sorted(runs[-1].rglob(name)):
                console.print(f"{name:12s} {path}")
        console.print(f"run folder   {runs[-1]}")
    console.print(f"DAG run state {state}; total {time.time() - t0:.0f}s")
    return 0 if state == "success" else 1


@app.command()
def quick(
    profile: str = typer.Option("tiny", help="Model profile."),
    force: bool = typer.Option(False, help="Train even if a production model exists."),
) -> None:
    """Bootstrap the demo's model: tokenizer + tiny model + short SFT + register; promoted only if it passes
    the gate (on the dev split, against the legacy snapshot). A bootstrap below the gate stays a registered
    candidate: `qp demo` then publishes its results without activating them (legacy keeps serving)."""
    from qp_core import registry
    from qp_core.training.stages import run_chain

    console = _console()
    current = registry.production()
    if current is not None and not force:
        console.print(f"production model exists: {current.version} ({current.path}); nothing to do (--force to retrain)")
        return
    ctx = _ctx("quick", profile, None, None, False, True, console)
    # never forced: a model below the gate must not go live (it stays a candidate, with the gate's reasons)
    info = run_chain(ctx, ["base", "sft1", "evaluate", "promote"])
    _print_reports(console, ctx, info)


@app.command()
def stage(
    name: str = typer.Argument(..., help="aux | base | sft1 | sft2 | filter | grpo | evaluate | promote"),
    profile: str = typer.Option("tiny"),
    section: Optional[str] = typer.Option(None),
    run_id: Optional[str] = typer.Option(None),
    dt: Optional[str] = typer.Option(None),
    rerun: bool = typer.Option(False, help="Run again even if it finished."),
) -> None:
    """Run one stage of a run (resumes from its checkpoint)."""
    from qp_core.training.stages import run_stage

    ctx = _ctx(section, profile, run_id, dt, False)
    info = run_stage(ctx, name, rerun=rerun)
    typer.echo(json.dumps(info, ensure_ascii=False, indent=1, default=str))


@app.command()
def ablation(
    which: str = typer.Argument("all", help="isolated | context-off | step-matched | lambda-0 | all"),
    profile: str = typer.Option("tiny"),
    section: Optional[str] = typer.Option(None),
    run_id: Optional[str] = typer.Option(None, help="The main run to compare with (default <section>-<dt>)."),
    steps: Optional[int] = typer.Option(None, help="SFT steps per isolated model (default: stage-1 steps)."),
) -> None:
    """Ablations and controls next to a finished run: task-isolated models (Table 2), context off, one long
    stage 1 at stage 1 + stage 2's steps, λ = 0 at equal steps; report in <run>/ablations/."""
    from qp_core.training.ablation import CONTROLS, ablation_report, control_run_id, run_control, run_isolated_ablation
    from qp_core.training.run import training_root

    names = ["isolated", *CONTROLS]
    if which not in (*names, "all"):
        raise typer.BadParameter(f"{which!r}: expected one of {', '.join(names)} or all")
    console = _console()
    ctx = _ctx(section, profile, run_id, None, False, True, console)
    isolated = run_isolated_ablation(ctx, steps=steps) if which in ("isolated", "all") else None
    controls = {}
    for name, spec in CONTROLS.items():
        rid = control_run_id(ctx, name)
        ran_before = (training_root() / "runs" / rid / "evaluate" / "stage.json").exists()
        if which in (name, "all") or ran_before:  # a finished control stays in the report
            controls[name] = _ctx(section, profile, rid, ctx.dt, False, console=console,
                                  overrides=spec["overrides"](ctx.settings))
        if which in (name, "all"):
            run_control(controls[name], name)
    paths = ablation_report(ctx, isolated, controls)
    for key, path in paths.items():
        console.print(f"{key:12s} {path}")


@app.command()
def baselines(
    profile: str = typer.Option("tiny", help="Model profile (its section's eval/dev settings)."),
    section: Optional[str] = typer.Option(None),
) -> None:
    """Both legacy rows on the golden set, no model needed: the refitted pipeline (the fair baseline, fitted
    on the chain's training rows) minus the stale snapshot, with paired 95% intervals per slice."""
    from qp_core.legacy import load_or_train
    from qp_core.legacy.pipeline import read_annotations, snapshot_rows
    from qp_core.legacy.settings import load_legacy_settings
    from qp_core.training import assess
    from qp_core.training.data import golden_rows, traffic_sample
    from qp_core.training.evaluate import evaluate_legacy, refitted_legacy
    from qp_core.training.report import plain_table
    from qp_core.training.run import training_annotations

    console = _console()
    ctx = _ctx(section, profile, None, None, False, True, console)
    s = ctx.settings
    golden = golden_rows(s.eval.limit, seed=s.seed)
    refit = refitted_legacy(training_annotations(ctx))
    res = {assess.LEGACY_REFIT: evaluate_legacy(golden, refit), assess.LEGACY_SNAPSHOT: evaluate_legacy(golden, load_or_train())}
    snap, _ = snapshot_rows(read_annotations(), load_legacy_settings().snapshot_days)
    masks, shares = assess.slice_setup(golden, snap, traffic_sample(s.eval.traffic_sample, seed=s.seed), refit)
    order = [assess.LEGACY_REFIT, assess.LEGACY_SNAPSHOT]
    cmp = assess.comparison_rows(res, [tuple(order)], masks=masks, shares=shares, seed=s.seed)
    console.print(f"golden rows {len(golden)}; traffic shares {({k: round(v, 3) for k, v in shares.items()})}")
    console.print(plain_table([{"name": assess.NAMES[n], **{k: round(res[n][k], 2) for k in assess.SHORT}}
                               for n in order]), markup=False)
    console.print(plain_table(assess.slice_rows(res, order, masks, shares)), markup=False)
    console.print(plain_table([{k: v for k, v in r.items() if k not in ("a", "b", "intervals")} for r in cmp]),
                  markup=False)


@app.command("models")
def models() -> None:
    """List registered models (production marked with *)."""
    from qp_core import registry

    prod = registry.production()
    for rec in registry.list_models():
        mark = "*" if prod and rec.version == prod.version else " "
        typer.echo(f"{mark} {rec.version:36s} {rec.profile:12s} {rec.stage:6s} overall={rec.metrics.get('overall', 0):6.2f} {rec.created}")


@app.command()
def promote(version: str, force: bool = typer.Option(False, help="Bypass the gate.")) -> None:
    """Promote a registered model through the gate (Overall ≥ production − tolerance, no sub-task drop > δ)."""
    from qp_core import registry

    try:
        decision = registry.promote(version, force=force)
    except registry.RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)
    typer.echo(f"promoted {version}: {'; '.join(decision.reasons)}")


@app.command()
def rollback() -> None:
    """Point production back at the previously promoted model."""
    from qp_core import registry

    rec = registry.rollback()
    typer.echo(f"production is now {rec.version}")
