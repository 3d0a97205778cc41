"""`tinybev`: one command line for every job of the project.

Subcommands live in their own modules and are imported only when used, so `tinybev --help` stays fast
and the runtime never imports training code unless a training command runs. Each module provides
`configure(parser)` and `run(args) -> int | None`.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from tinybev_ros.errors import CheckpointError, ConfigError, DatasetError
from tinybev_ros.interrupts import sigterm_as_interrupt

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("tinybev_ros.ros.doctor", "check that every component of the environment imports and works"),
    "demo": ("training.demo", "the main job: synthetic scene -> bag -> node -> outputs, pictures, metrics"),
    "synth": ("tinybev_ros.synth.cli", "write a synthetic driving dataset in the exact nuScenes format"),
    "synth-render": ("tinybev_ros.synth.pictures", "picture of one sample: six cameras with projected boxes + BEV map"),
    "eval": ("training.evaluation.command", "a checkpoint on a nuScenes-format split: all metrics, figures, GIF"),
    "eval-worlds": ("training.evaluation.worlds", "evaluate a checkpoint on fresh synthetic worlds (unseen seeds)"),
    "nds-terms": ("training.evaluation.nds_terms", "what each part of NDS earns per model, and where models differ"),
    "params": ("tinybev_ros.model.summary", "print the student's parameter count per part for a model config"),
    "release": ("tinybev_ros.release", "write a trained student as the file to ship: float16 weights + source hash"),
    "export-onnx": ("tinybev_ros.export_onnx", "export a student checkpoint to ONNX (+ the rig's splat index)"),
    "train": ("training.train", "supervised training of the student or the teacher (torchrun for several GPUs)"),
    "teacher-cache": ("training.teachers.caching", "run a teacher once over dataset splits into a teacher cache"),
    "distill": ("training.distill", "train the student with cross-modal distillation from a teacher (S1/S2/S3)"),
    "distill-probe": ("training.distillation.probe", "each distillation term's gradient against the ground truth's"),
    "ablate": ("training.ablation", "teacher once, then the student without and with S1/S2/S3 distillation: one table"),
    "run": ("tinybev_ros.ros.run", "start tinybev_node with its params file (and replay a bag) without ros2 launch"),
    "bag": ("tinybev_ros.ros.bag.cli", "nuScenes -> rosbag2 conversion, and bag play/record without rosbag2"),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, str | None]:
    parser = argparse.ArgumentParser(prog="tinybev", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).configure(sub_parser)
    return parser, chosen


STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def is_storage_error(exc: BaseException) -> bool:
    """A write the disk refused: an OSError of a full or read-only file system, or safetensors' or sqlite3's
    wrapping of one ("I/O error: File too large", "database or disk is full"), anywhere in the chain of causes
    (a context the raiser suppressed, `raise ... from None`, is not one)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return True
        if type(exc).__name__ in ("SafetensorError", "OperationalError") and any(text in str(exc) for text in (
                "No space left", "File too large", "Disk quota", "Read-only file system", "disk is full",
                "readonly database")):  # safetensors' and sqlite3's wording
            return True
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser, chosen = build_parser(argv)
        args = parser.parse_args(argv)
        if chosen is None or args.command is None:
            parser.print_help()
            return 2
        with sigterm_as_interrupt():  # a batch system's stop unwinds like Ctrl-C (interrupts.py)
            result = importlib.import_module(COMMANDS[chosen][0]).run(args)
    except (CheckpointError, ConfigError, DatasetError) as exc:  # the user's files, not our bug: one line
        print(f"tinybev {chosen}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk or a read-only folder where any output is written: the machine's state
        if not is_storage_error(exc):
            raise
        print(f"tinybev {chosen}: error: cannot write an output ({exc}); free space (or make the folder writable) "
              "and run the same command again: finished work is kept and what was cut off is written afresh",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (or a parent stopping us) is a request, not a crash: no traceback
        print(f"tinybev {argv[0] if argv else ''}: interrupted".rstrip(), file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
