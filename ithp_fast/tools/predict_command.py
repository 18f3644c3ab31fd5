"""``ithp-fast predict``: score texts with a trained checkpoint.

    ithp-fast predict --checkpoint DIR "I really love this movie" "the plot was dull"
    ithp-fast predict --checkpoint DIR --input reviews.csv --output scores.csv
    cat reviews.txt | ithp-fast predict --checkpoint DIR
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from typing import Optional

from .errors import CommandError, one_line_errors, user_error

DESCRIPTION = """\
Score texts with a trained ITHP-DeBERTa checkpoint: text in, sentiment score out (the model's
regression output; the synthetic set and CMU-MOSI label sentiment from -3, negative, to +3, positive).

Texts come as arguments, from --input FILE (.txt: one text per line; .csv or .jsonl: the --text-column
column or field, and an id column or field when there is one), or from standard input (one text per
line). Each text is tokenised by the checkpoint's tokenizer, cut to the model's max_seq_length tokens
(the output says which were cut) and scored with ITHP's posterior mean, so one text always gets one
score. An empty text is an error, as is a file that is not UTF-8. Words outside a word-level
vocabulary are counted in one line on standard error.

Scores go to --output FILE (.csv or .jsonl: id when given, text, score, cut), or to the console as a
table.
"""

INPUT_SUFFIXES = (".txt", ".csv", ".jsonl")
OUTPUT_SUFFIXES = (".csv", ".jsonl")
PROGRESS_FROM = 256
"""Texts from which a progress bar is shown."""


@dataclass
class Texts:
    """The texts to score, their ids (None when the input has none) and where each came from."""

    texts: list[str]
    ids: Optional[list]
    places: list[str]


def suffix(path: str, allowed: tuple[str, ...], option: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in allowed:
        raise CommandError(f"{option}: expected a {', '.join(allowed)} file, got {os.path.basename(path)!r}")
    return ext


def read_text_file(path: str) -> str:
    """The content of ``path`` as UTF-8 (a byte-order mark dropped); one clear error otherwise."""
    if not os.path.isfile(path):
        raise CommandError(f"--input: {path} not found")
    data = open(path, "rb").read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CommandError(f"--input: {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                           f"{err.start}); save it as UTF-8") from None


def read_input(path: str, text_column: str, id_column: str) -> Texts:
    """The texts of a .txt, .csv or .jsonl file."""
    ext = suffix(path, INPUT_SUFFIXES, "--input")
    content = read_text_file(path)
    if ext == ".txt":
        lines = content.splitlines()
        return Texts(lines, None, [f"{path}, line {n}" for n in range(1, len(lines) + 1)])
    rows = read_csv(path, content, text_column) if ext == ".csv" else read_jsonl(path, content, text_column)
    ids = [row.get(id_column) for _, row in rows] if rows and all(id_column in row for _, row in rows) else None
    return Texts([row[text_column] for _, row in rows], ids, [place for place, _ in rows])


def read_csv(path: str, content: str, column: str) -> list[tuple[str, dict]]:
    reader = csv.DictReader(io.StringIO(content))
    if reader.fieldnames is None:
        return []
    if column not in reader.fieldnames:
        raise CommandError(f"--input: {path} has no column {column!r} (columns: {', '.join(reader.fieldnames)}); "
                           f"name the text column with --text-column")
    return [(f"{path}, line {reader.line_num}", row) for row in reader]


def read_jsonl(path: str, content: str, field: str) -> list[tuple[str, dict]]:
    rows = []
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CommandError(f"--input: {path}, line {n}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or field not in row:
            raise CommandError(f"--input: {path}, line {n}: no field {field!r}; name the text field with "
                               f"--text-column")
        if not isinstance(row[field], str):
            raise CommandError(f"--input: {path}, line {n}: {field!r} is a {type(row[field]).__name__}, not a text")
        rows.append((f"{path}, line {n}", row))
    return rows


def gather_texts(args: argparse.Namespace) -> Texts:
    """The texts of the arguments, of --input, or of standard input; each non-empty."""
    if args.texts and args.input:
        raise CommandError("give texts as arguments or with --input FILE, not both")
    if args.texts:
        found = Texts(list(args.texts), None, [f"text {n}" for n in range(1, len(args.texts) + 1)])
    elif args.input:
        found = read_input(args.input, args.text_column, args.id_column)
    elif sys.stdin is None or sys.stdin.isatty():
        raise CommandError("no texts: give them as arguments, with --input FILE, or on standard input")
    else:
        lines = sys.stdin.read().splitlines()
        found = Texts(lines, None, [f"standard input, line {n}" for n in range(1, len(lines) + 1)])
    if not found.texts:
        raise CommandError(f"--input: {args.input} holds no texts" if args.input else "no texts given")
    for text, place in zip(found.texts, found.places):
        if not text.strip():
            raise CommandError(f"{place}: empty text; there are no words to score")
    return found


def write_output(path: str, found: Texts, scored) -> None:
    """``path`` (.csv or .jsonl) written whole or not at all."""
    ext = suffix(path, OUTPUT_SUFFIXES, "--output")
    rows = []
    for i, (text, score, cut) in enumerate(zip(found.texts, scored.scores, scored.cut)):
        row = {"id": found.ids[i]} if found.ids is not None else {}
        rows.append({**row, "text": text, "score": score, "cut": cut})
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            if ext == ".jsonl":
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            else:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows({**row, "score": repr(row["score"])} for row in rows)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def print_table(found: Texts, scored) -> None:
    ids = found.ids if found.ids is not None else None
    width = max(len(str(i)) for i in ids) if ids else 0
    print(("id".ljust(width) + "  " if ids else "") + "score    text")
    for i, (text, score, cut) in enumerate(zip(found.texts, scored.scores, scored.cut)):
        shown = f"{score:+.4f}" if isinstance(score, float) else ",".join(f"{s:+.4f}" for s in score)
        line = " ".join(text.split()) + ("  [cut]" if cut else "")
        print((str(ids[i]).ljust(width) + "  " if ids else "") + f"{shown}  {line}")


def check_output_path(path: Optional[str]) -> None:
    if path is None:
        return
    suffix(path, OUTPUT_SUFFIXES, "--output")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CommandError(f"--output: the directory {parent} does not exist")


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device: {name} asked for, but no CUDA device is available")
    return device


@one_line_errors("predict")
def predict_command(args: argparse.Namespace) -> int:
    from ..serving.text import TextScorer
    from ..training.load import load_checkpoint

    if args.batch_size < 1:
        raise CommandError(f"--batch-size: expected a positive number, got {args.batch_size}")
    check_output_path(args.output)
    found = gather_texts(args)
    model = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    if model.tokenizer is None:
        raise CommandError(f"--checkpoint: {args.checkpoint} carries no tokenizer (its model was trained on token "
                           f"ids), so it cannot read text")
    scorer = TextScorer(model, batch_size=args.batch_size)
    scored = scorer.score(found.texts, progress=len(found.texts) >= PROGRESS_FROM, warn=False)
    note = scored.unknown_message()
    if note:
        user_error("predict", note, kind="note")
    if any(scored.cut):
        user_error("predict", f"{sum(scored.cut)} of {len(found.texts)} texts had more than {scorer.max_tokens} "
                              f"tokens and were cut to them (marked cut)", kind="note")
    if args.output:
        write_output(args.output, found, scored)
        print(f"wrote {len(found.texts)} scores to {args.output}")
    else:
        print_table(found, scored)
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="score texts with a trained checkpoint", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to score (or --input FILE, or standard input)")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint directory (ithp-fast train, ithp-fast package or save_pretrained)")
    p.add_argument("--input", metavar="FILE", help=".txt (one text per line), .csv or .jsonl")
    p.add_argument("--text-column", default="text", metavar="NAME",
                   help="the column (.csv) or field (.jsonl) holding the texts (default: text)")
    p.add_argument("--id-column", default="id", metavar="NAME",
                   help="the column or field of ids, copied to the output when every row has one (default: id)")
    p.add_argument("--output", metavar="FILE", help=".csv or .jsonl to write; default: a table on the console")
    p.add_argument("--batch-size", "--batch", type=int, default=32, help="texts per forward (default: 32)")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda or cuda:N")
    p.set_defaults(func=predict_command)
