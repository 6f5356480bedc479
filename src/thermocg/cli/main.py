"""``thermocg <stage> CONFIG``: the command line, thin over the library.

A user error (:class:`~thermocg.errors.ThermocgError`) prints one line and exits
with status 2; ``--debug`` shows the traceback. Heavy imports happen inside the
stage functions, so ``thermocg --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings

from thermocg.pipeline import STAGES, Stage, stage

#: the verbs: one per stage of the pipeline table, ``run``, and ``export`` (a model, not a config)
RUN_HELP = "every stage in order, skipping those up to date and resuming an interrupted one"
EXPORT_HELP = ("write a trained model for another engine: --to torchscript (torch alone: OpenMM-Torch, TorchMD, "
               "LAMMPS ML-IAP), --to openmm (the distilled form as an OpenMM System XML) or --to lammps (its tables)")


def run_verb(verb: str, config, args) -> None:
    """What ``thermocg VERB CONFIG`` does: the stage (after the stages its verb runs first:
    ``train`` runs ``targets``), or, for ``run``, every stage in order; each stage's summary
    is logged when it has finished."""
    from thermocg import pipeline

    log = logging.getLogger("thermocg")
    names = [s.name for s in STAGES] if verb == "run" else [*stage(verb).cli_runs_first, verb]

    def on_stage(s: Stage, when: str, manifest: dict | None = None) -> None:
        if when == "start" and verb == "run":
            log.info("== %s", s.name)
        if when == "done" and (verb == "run" or s.name == verb):
            for line in s.summary_lines(config, manifest):
                log.info("%s", line)

    force = args.force if verb == "run" else ({verb} if args.force else False)  # not the stages run first
    pipeline.run(config, names, force=force, show_progress=not args.quiet, on_stage=on_stage)


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a line is written (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure_logging(debug: bool) -> logging.Handler:
    """thermocg's own lines, prefixed ``thermocg:``. Other libraries' log records (MDAnalysis'
    "netCDF4 is not available" when hippynn imports it, freud's "Using SciPy's fftpack") are
    notes about those libraries, not about the user's run: they are shown only with ``--debug``
    (then every line carries its logger's name). Returns the handler, which main() removes."""
    handler = _Stderr()
    if debug:
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("thermocg: %(message)s"))
        handler.addFilter(lambda record: record.name == "thermocg" or record.name.startswith("thermocg."))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    return handler


def _verbs() -> dict[str, str]:
    return {**{s.name: s.help for s in STAGES}, "run": RUN_HELP}


def export_verb(args) -> None:
    from thermocg.export import export

    out = export(args.model, args.to, args.output, args.temperature, args.distill, args.r3)
    logging.getLogger("thermocg").info("export: %s -> %s (%s)", args.model, out, args.to)


def build_parser() -> argparse.ArgumentParser:
    from thermocg import __version__

    p = argparse.ArgumentParser(
        prog="thermocg",
        description="Temperature-transferable coarse-grained force fields from thermal response forces.",
        epilog="stages:\n" + "\n".join(f"  {k:<12} {v}" for k, v in {**_verbs(), "export": EXPORT_HELP}.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"thermocg {__version__}")
    sub = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, help_text in _verbs().items():
        s = sub.add_parser(name, help=help_text, description=help_text)
        s.add_argument("config", metavar="CONFIG", help="TOML configuration file")
        s.add_argument("--force", action="store_true",
                       help="delete this stage's outputs and recompute them, whether or not the config changed "
                            "(with run: every stage)")
        s.add_argument("--quiet", action="store_true", help="no progress bars")
        s.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    e = sub.add_parser("export", help=EXPORT_HELP, description=EXPORT_HELP)
    e.add_argument("model", metavar="MODEL", help="a saved model (.pt) of the train stage")
    e.add_argument("--to", required=True, metavar="FORMAT",
                   help="torchscript (the network, torch alone), openmm (the distilled form as System XML) or "
                        "lammps (the distilled form as LAMMPS tables and inputs, in a directory)")
    e.add_argument("--distill", default=None, metavar="FRAMES",
                   help="openmm, lammps: the H5MD frames (reference, targets or CG trajectory) to fit the distilled "
                        "form on (lammps: the first is the data file's configuration)")
    e.add_argument("--r3", type=float, default=3.6, metavar="A",
                   help="openmm, lammps: the distilled form's three-body radius in Å (0: pair terms only; default 3.6)")
    e.add_argument("-o", "--output", required=True, metavar="OUT", help="the file to write (must not exist)")
    e.add_argument("--temperature", type=float, default=None, metavar="K",
                   help="the temperature the export will run at: warns when it is far from the training temperatures")
    e.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _configure_logging(args.debug)
    if not args.debug:
        # torch's note on hippynn's use of sparse tensors at import: not about the user's run
        note = "Sparse invariant checks are implicitly disabled"
        warnings.filterwarnings("ignore", message=note)
        # worker processes (reference, train) are new interpreters: the same filter, by environment
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), f"ignore:{note}")))
    from thermocg.config import load_config
    from thermocg.errors import ThermocgError

    previous = signal.signal(signal.SIGTERM, _terminate)  # `kill PID` stops a run as Ctrl-C does
    try:
        if args.stage == "export":
            export_verb(args)
        else:
            run_verb(args.stage, load_config(args.config), args)
    except ThermocgError as err:
        if args.debug:
            raise
        print(f"thermocg {args.stage}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an output path: read-only, cannot be created, disk full, ...
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"thermocg {args.stage}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"thermocg {args.stage}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        logging.getLogger().removeHandler(handler)
    return 0


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: the clean-up must not be interrupted
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
