"""``ithp-fast export``: a trained checkpoint as an ONNX file or an AOTInductor package.

    ithp-fast export --checkpoint DIR --format onnx|aoti --output FILE [--tokens 50] [--batch N]

The checkpoint is loaded with :func:`ithp_fast.load_checkpoint` (eval mode, posterior mean) and
written by :func:`ithp_fast.export`: ``input_ids`` and ``attention_mask`` (int64 ``[batch,
tokens]``) -> ``logits`` ``[batch, num_labels]``, the batch dynamic unless ``--batch`` fixes it.
A bad argument or a failed export prints one line naming the problem and exits with 2; nothing
is left at the output path then.
"""

from __future__ import annotations

import argparse
import os
import sys

FORMATS = ("onnx", "aoti")


def _problem(args: argparse.Namespace) -> str | None:
    """The first thing wrong with the arguments that can be told before loading anything."""
    if args.format not in FORMATS:
        return f"--format: expected one of {', '.join(FORMATS)}, got {args.format!r}"
    if not os.path.isdir(args.checkpoint):
        return f"--checkpoint: {args.checkpoint} is not a directory"
    parent = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(parent):
        return f"--output: the directory {parent} does not exist"
    if args.format == "aoti" and not args.output.endswith(".pt2"):
        return f"--output: an AOTInductor package's name must end in .pt2, got {os.path.basename(args.output)!r}"
    for name in ("tokens", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name}: expected a positive number, got {value}"
    return None


def export_command(args: argparse.Namespace) -> int:
    problem = _problem(args)
    if problem is None:
        try:
            import ithp_fast

            model = ithp_fast.load_checkpoint(args.checkpoint, device=args.device)
            paths = ithp_fast.export(model, args.output, format=args.format, tokens=args.tokens, batch=args.batch)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError, ImportError) as err:
            problem = f"{type(err).__name__}: {err}".splitlines()[0]
        else:
            print("wrote " + ", ".join(paths))
            return 0
    print(f"ithp-fast export: error: {problem}", file=sys.stderr)
    return 2


def register(sub) -> None:
    p = sub.add_parser("export", help="write a checkpoint as an ONNX file or an AOTInductor package",
                       description="Write a checkpoint's ITHP-DeBERTa (eval mode, posterior mean) as an ONNX file or "
                                   "an AOTInductor package: input_ids and attention_mask (int64 [batch, tokens]) -> "
                                   "logits [batch, num_labels].")
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory written by `ithp-fast train`")
    p.add_argument("--format", required=True,
                   help="onnx (a .onnx file, weights in FILE.data beside it, checked in ONNX Runtime) or aoti "
                        "(an AOTInductor package, FILE ending in .pt2)")
    p.add_argument("--output", required=True, help="the file to write (its folder must exist)")
    p.add_argument("--tokens", type=int, default=50, help="tokens per example, fixed in the program (default 50)")
    p.add_argument("--batch", type=int, default=None, help="a fixed batch size (default: a dynamic batch dimension)")
    p.add_argument("--device", default="cpu", help="where to load the model: cpu (default) or cuda (aoti compiles "
                                                   "for that device)")
    p.set_defaults(func=export_command)
