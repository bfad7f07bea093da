"""`rlaif data check FILE`: validate a Nova RFT dataset; one `file:line: field: message` per problem, exit 1."""
from __future__ import annotations

import sys

from rlaif.config.recipe import load_recipe
from rlaif.data.dataset import prompt_tokens, read_records
from rlaif.data.nova import bedrock_problems, open_weight_problems
from rlaif.data.tables import parse_columns
from rlaif.errors import UserError


def add_parser(sub) -> None:
    dp = sub.add_parser("data", help="dataset tools")
    dsub = dp.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    cp = dsub.add_parser("check", help="validate a Nova RFT JSONL dataset",
                         description="Validate a Nova RFT dataset; print one line per problem "
                                     "(file:line: field: message) and exit 1 if there is any.")
    cp.add_argument("file", help="Nova RFT JSONL, or a Parquet/JSON/CSV table with --columns")
    cp.add_argument("--columns", help="for tables: field=column pairs, e.g. prompt=question,reference_answer=answer")
    cp.add_argument("--max-prompt-length", type=int, help="count prompts longer than this (tokens); default: the "
                    "recipe's nova.hyperparameters.maxPromptLength")
    cp.add_argument("--tokenizer", help="tokenizer for prompt lengths (default: the recipe's policy)")
    cp.add_argument("--recipe", help="take maxPromptLength and the tokenizer from this recipe")
    cp.add_argument("--local", action="store_true", help="only the rules for local training (multi-turn prompts "
                    "and fewer than 100 records allowed)")
    cp.add_argument("--target", choices=["nova", "open-weight"], default="nova",
                    help="whose Bedrock rules: nova (single-turn prompts; default) or open-weight (gpt-oss-20b, "
                         "Qwen3-32B: a reference_answer in every record, prompts of any turns)")
    cp.set_defaults(fn=cmd_check)


def cmd_check(a) -> int:
    res = read_records(a.file, parse_columns(a.columns))
    problems = list(res.problems)
    if not a.local:
        rows = list(zip(res.record_lines, res.records))
        problems += (open_weight_problems if a.target == "open-weight" else bedrock_problems)(a.file, rows)
    for p in sorted(problems, key=lambda p: p.line):
        print(f"error: {p}", file=sys.stderr)
    bad_lines = len({p.line for p in problems})
    valid = len(res.records) - len({p.line for p in problems} & set(res.record_lines))
    notes = []
    # prompts over the maximum length: Bedrock leaves them out of training; so does rlaif
    max_len, tok, how = a.max_prompt_length, None, "tokens"
    if a.recipe:
        r = load_recipe(a.recipe, check_files=False)
        max_len = max_len or r.nova.hyperparameters.maxPromptLength
        a.tokenizer = a.tokenizer or r.policy.model
    if max_len:
        if a.tokenizer:
            from transformers import AutoTokenizer
            try:
                tok = AutoTokenizer.from_pretrained(a.tokenizer)
            except Exception as e:
                raise UserError(f"--tokenizer {a.tokenizer}: cannot load: {type(e).__name__}: {e}") from None
        else:
            how = "tokens, estimated at 4 characters a token (give --tokenizer for exact counts)"
        long = []
        for n, rec in zip(res.record_lines, res.records):
            size = (prompt_tokens(tok, rec["prompt"]) if tok is not None
                    else sum(len(m["content"]) for m in rec["prompt"]) // 4)
            if size > max_len:
                long.append((n, size))
        for n, size in long[:20]:
            print(f"warning: {a.file}:{n}: messages: prompt of {size} tokens is over maxPromptLength {max_len}; "
                  "Bedrock leaves it out of training", file=sys.stderr)
        if len(long) > 20:
            print(f"warning: ... and {len(long) - 20} more prompt(s) over maxPromptLength", file=sys.stderr)
        notes.append(f"{len(long)} prompt(s) over maxPromptLength {max_len} ({how})")
    size_ok = True
    if not a.local and not 100 <= valid <= 20000:
        size_ok = False
        print(f"error: {a.file}: a Bedrock RFT job takes 100 to 20,000 training records; this file has {valid} "
              "valid (use --local to check a file for local training only)", file=sys.stderr)
    print(f"{a.file}: {valid} valid record(s), {bad_lines} refused, {res.lines} non-empty line(s)"
          + "".join(f"; {n}" for n in notes))
    return 1 if problems or not size_ok or not valid else 0
