"""``mtlkit export RUN_DIR --format torchscript|onnx [--out FILE [--overwrite]]``: a trained run as a file for serving."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add the ``export`` subcommand to the ``mtlkit`` subparsers."""
    from mtlkit.export import FORMATS

    parser = commands.add_parser(
        "export",
        help="write a trained run as TorchScript or ONNX for serving (with a JSON signature and encoders)",
        description=(
            "Write the model of a run folder as a file that maps the encoded feature tensors (categorical "
            "codes, numeric columns; raw value columns when the run has a fusion that reads them) to every "
            "task's probability and the fused score. Writes <file>.signature.json and <file>.encoders.json "
            "next to it, and checks the file against the PyTorch model. See docs/export.md."
        ),
    )
    parser.add_argument("run", help="the run folder (with checkpoint.pt)")
    parser.add_argument(
        "--format",
        required=True,
        metavar="FORMAT",
        help=f"one of {', '.join(FORMATS)}",
    )
    parser.add_argument(
        "--out",
        help="the file to write (default: RUN/export/model.pt for torchscript, RUN/export/model.onnx for onnx, "
        "replaced by every export; an --out file that exists needs --overwrite)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the --out file (and its .signature.json / .encoders.json) when it exists",
    )
    parser.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from mtlkit.export import check_format, export_run

    check_format(args.format)
    result = export_run(args.run, args.format, args.out, overwrite=args.overwrite)
    print(f"wrote {result.format} model {result.path} in {result.seconds:.1f} s")
    print(f"  inputs:  {', '.join(result.inputs)}")
    print(f"  outputs: {', '.join(result.outputs)}")
    print(f"  signature: {result.signature_path}")
    if result.encoders_path is not None:
        print(f"  encoders:  {result.encoders_path}")
    if result.notes:
        for note in result.notes:
            print(f"  note: {note}")
    else:
        print(f"  checked with {result.checked_with}: max abs difference {result.max_abs_diff:.2g}")
    return 0
