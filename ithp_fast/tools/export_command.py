"""``ithp-fast export``: a trained checkpoint as an ONNX bundle or an AOTInductor package.

    ithp-fast export --checkpoint DIR --format onnx|aoti --output FILE [--tokens N] [--batch-size N]
                     [--quantize none|int8]

The checkpoint is loaded with :func:`ithp_fast.load_checkpoint` (eval mode, posterior mean) and
written by :func:`ithp_fast.export`: ``input_ids`` and ``attention_mask`` (int64 ``[batch,
sequence]``) -> ``logits`` ``[batch, num_labels]``. ONNX: the batch and the sequence (1 to the
checkpoint's ``max_seq_length`` tokens) are dynamic, the tokenizer is written beside the file and
the file's metadata says what it computes. AOTInductor: ``--tokens`` tokens, fixed. A bad argument
or a failed export prints one line naming the problem and exits with 2; nothing is left at the
output path then.
"""

from __future__ import annotations

import argparse
import os

from ..serving.quantize import check_quantize
from .errors import user_error

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
    try:
        check_quantize(args.quantize, "--quantize")
    except ValueError as err:
        return str(err)
    if args.quantize != "none" and args.format != "onnx":
        return f"--quantize: int8 quantises an ONNX program; got --format {args.format}"
    if args.format == "aoti" and not args.output.endswith(".pt2"):
        return f"--output: an AOTInductor package's name must end in .pt2, got {os.path.basename(args.output)!r}"
    for flag, value in (("--tokens", args.tokens), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            return f"{flag}: expected a positive number, got {value}"
    return None


def export_command(args: argparse.Namespace) -> int:
    problem = _problem(args)
    if problem is None:
        try:
            import ithp_fast

            model = ithp_fast.load_checkpoint(args.checkpoint, device=args.device)
            paths = ithp_fast.export(model, args.output, format=args.format, tokens=args.tokens,
                                     batch=args.batch_size, quantize=args.quantize)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError, ImportError) as err:
            problem = f"{type(err).__name__}: {err}".splitlines()[0]
        else:
            print("wrote " + ", ".join(paths))
            return 0
    user_error("export", problem)
    return 2


def register(sub) -> None:
    p = sub.add_parser("export", help="write a checkpoint as an ONNX bundle or an AOTInductor package",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory written by `ithp-fast train`")
    p.add_argument("--format", required=True,
                   help="onnx (FILE, the weights in FILE.data and the tokenizer beside it, checked in ONNX Runtime) "
                        "or aoti (an AOTInductor package, FILE ending in .pt2)")
    p.add_argument("--output", required=True, help="the file to write (its folder must exist)")
    p.add_argument("--tokens", type=int, default=None,
                   help="tokens per text: the most (onnx) or the fixed count (aoti). Default: the checkpoint's "
                        "max_seq_length")
    p.add_argument("--batch-size", "--batch", type=int, default=None,
                   help="a fixed batch size. Default: a dynamic batch dimension")
    p.add_argument("--quantize", default="none",
                   help="none (default, float32) or int8: ONNX Runtime's dynamic int8 quantisation of the ONNX "
                        "program (one file, the weights inside; faster on the CPU, scores differ slightly)")
    p.add_argument("--device", default="cpu", help="where to load the model: cpu (default) or cuda (aoti compiles "
                                                   "for that device)")
    p.set_defaults(func=export_command)
