"""``thermocg <stage> CONFIG``: the command line, thin over the library.

A user error (:class:`~thermocg.errors.ThermocgError`) prints one line and exits
with status 2; ``--debug`` shows the traceback. Heavy imports happen inside the
stage functions, so ``thermocg --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

STAGES = {
    "reference": "all-atom reference MD (OpenMM) at every temperature, with per-molecule energies",
    "targets": "map to one bead per molecule; baselines and thermal-response targets per temperature",
    "train": "train the CG force fields (fm, fm-each, em, trf1, trf2, trf-multi); runs the targets stage "
             "first when it is not up to date",
    "simulate": "CG molecular dynamics (torch: BAOAB Langevin, then NVE segments) of every trained model at "
                "every temperature",
    "evaluate": "compare the CG simulations with the all-atom reference: forces, RDF, ADF, s2, D and D_CG/D_FG",
    "report": "one self-contained HTML page with the figures and tables of the evaluation (and PNG figures)",
    "run": "every stage in order, skipping those up to date and resuming an interrupted one",
}


def _run_reference(config, args) -> None:
    from thermocg.reference.stage import run_reference
    manifest = run_reference(config, force=args.force, show_progress=not args.quiet)
    for label, s in manifest.get("summary", {}).items():
        nvt = s.get("nvt")
        if isinstance(nvt, dict):
            logging.getLogger("thermocg").info(
                "%s: %d frames, %.1f ns/day MD, worst |sum u_J - E|/|E| = %.1e", label, nvt["frames"],
                nvt["md_ns_per_day"], nvt["max_decomposition_rel_error"])


def _run_targets(config, args) -> None:
    from thermocg.targets.stage import run_targets
    manifest = run_targets(config, force=args.force, show_progress=not args.quiet)
    log = logging.getLogger("thermocg")
    for label, s in manifest.get("summary", {}).items():
        log.info("%s: F0 R2 %.3f, U R2 %.3f, order-1 SNR/sample %.3f, order-2 SNR/sample %.3f "
                 "(~%.0f frames for 10%% on F2)", label, s["force_baseline_r2"], s["energy_baseline_r2"],
                 s["order1"]["snr_per_sample"], s["order2"]["snr_per_sample"], s["order2"]["frames_for_10_percent"])


def _run_train(config, args) -> None:
    from thermocg.models.stage import run_train
    manifest = run_train(config, force=args.force, show_progress=not args.quiet)
    for variant, s in manifest.get("summary", {}).items():
        if isinstance(s, dict):
            logging.getLogger("thermocg").info(
                "%s: validation loss %.4f -> %.4f (normalised MSE) in %d epochs", variant,
                s["valid_loss_before"] or float("nan"), s["best_valid_loss"], s["epochs"])


def _run_simulate(config, args) -> None:
    from thermocg.simulate.stage import run_simulate
    manifest = run_simulate(config, force=args.force, show_progress=not args.quiet)
    log = logging.getLogger("thermocg")
    for model, s in manifest.get("summary", {}).items():
        nvt = s.get("nvt")
        if isinstance(nvt, dict):
            temps = ", ".join(f"{k} {v['mean_kinetic_temperature_K']:.0f} K" for k, v in nvt.items()
                              if isinstance(v, dict))
            log.info("%s: %.2f ns/day per system (%d in a batch); kinetic temperatures %s", model,
                     nvt["ns_per_day_per_system"] or float("nan"), nvt["systems_in_batch"], temps)


def _run_evaluate(config, args) -> None:
    from thermocg.evaluate.stage import evaluate_dir, run_evaluate
    manifest = run_evaluate(config, force=args.force, show_progress=not args.quiet)
    log = logging.getLogger("thermocg")
    for model, s in manifest.get("summary", {}).items():
        iae, ratio = s.get("mean_rdf_iae"), s.get("mean_D_ratio")
        log.info("%s: mean RDF IAE %s, mean D_CG/D_FG %s", model, "n/a" if iae is None else f"{iae:.3f}",
                 "n/a" if ratio is None else f"{ratio:.2f}")
    log.info("results: %s", evaluate_dir(config) / "results.json")


def _run_report(config, args) -> None:
    from thermocg.report.stage import report_dir, run_report
    run_report(config, force=args.force, show_progress=not args.quiet)
    logging.getLogger("thermocg").info("report: %s", report_dir(config) / "report.html")


def _run_all(config, args) -> None:
    for stage in ("reference", "train", "simulate", "evaluate", "report"):  # train runs targets itself
        logging.getLogger("thermocg").info("== %s", stage)
        HANDLERS[stage](config, args)


HANDLERS = {"reference": _run_reference, "targets": _run_targets, "train": _run_train, "simulate": _run_simulate,
            "evaluate": _run_evaluate, "report": _run_report, "run": _run_all}


def build_parser() -> argparse.ArgumentParser:
    from thermocg import __version__

    p = argparse.ArgumentParser(
        prog="thermocg",
        description="Temperature-transferable coarse-grained force fields from thermal response forces.",
        epilog="stages:\n" + "\n".join(f"  {k:<12} {v}" for k, v in STAGES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"thermocg {__version__}")
    sub = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, help_text in STAGES.items():
        s = sub.add_parser(name, help=help_text, description=help_text)
        s.add_argument("config", metavar="CONFIG", help="TOML configuration file")
        s.add_argument("--force", action="store_true",
                       help="regenerate outputs made by a different config (they are deleted)")
        s.add_argument("--quiet", action="store_true", help="no progress bars")
        s.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="thermocg: %(message)s", stream=sys.stderr)
    if not args.debug:
        # torch's note on hippynn's use of sparse tensors at import: not about the user's run
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
    from thermocg.config import load_config
    from thermocg.errors import ThermocgError

    try:
        config = load_config(args.config)
        HANDLERS[args.stage](config, args)
    except ThermocgError as err:
        if args.debug:
            raise
        print(f"thermocg {args.stage}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"thermocg {args.stage}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
