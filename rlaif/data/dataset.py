"""A Nova RFT file (JSONL, or a table with a column mapping) as the `datasets.Dataset` TRL trains on, and the
prompt lengths Bedrock's maxPromptLength counts."""
from __future__ import annotations

import json
from pathlib import Path

from rlaif.config.recipe import Recipe
from rlaif.config.rewards import JudgeSourceSpec, VerifiableSourceSpec
from rlaif.config.rubric import load_rubric
from rlaif.data.nova import read_jsonl
from rlaif.data.reader import ReadResult, number_records
from rlaif.data.tables import TABLE_SUFFIXES, read_table
from rlaif.errors import UserError


def read_records(path: str | Path, columns: dict[str, str] | None = None) -> ReadResult:
    """Nova RFT JSONL, or a Parquet/JSON/CSV table with a column mapping; ids filled in as `<file>-<line>`."""
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return number_records(read_table(path, columns), path)
    if columns:
        raise UserError(f"{path}: a column mapping is for Parquet, JSON or CSV files; JSONL uses Nova's field names")
    return read_jsonl(path)


def load_dataset(path: str | Path, strict: bool = True, columns: dict[str, str] | None = None):
    """The records of a Nova RFT file as a `datasets.Dataset`; with strict, any problem is an error."""
    from datasets import Dataset

    res = read_records(path, columns)
    if res.problems and strict:
        shown = "\n".join(str(p) for p in res.problems[:20])
        more = f"\n... and {len(res.problems) - 20} more" if len(res.problems) > 20 else ""
        raise UserError(f"{path}: {len(res.problems)} problem(s) in {res.lines} records:\n{shown}{more}")
    if not res.records:
        raise UserError(f"{path}: no valid records")
    return Dataset.from_list(res.records)


def prompt_tokens(tokenizer, messages: list[dict]) -> int:
    """A prompt's length as the policy sees it: chat template and generation prompt included."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def drop_long_prompts(dataset, tokenizer, max_tokens: int, where: str = "data.train"):
    """Bedrock's maxPromptLength: longer prompts are left out of training. Returns (dataset, dropped ids)."""
    lengths = [prompt_tokens(tokenizer, p) for p in dataset["prompt"]]
    keep = [i for i, n in enumerate(lengths) if n <= max_tokens]
    dropped = [dataset[i]["id"] for i in range(len(lengths)) if lengths[i] > max_tokens]
    if not keep:
        raise UserError(f"{where}: every prompt is longer than maxPromptLength {max_tokens} tokens "
                        f"(shortest: {min(lengths)})")
    return (dataset.select(keep) if dropped else dataset), dropped


def own_criteria_rule(recipe: Recipe):
    """A function of a record's metadata that gives (field, message) when the record's own criteria cannot be
    judged with the recipe (a criterion named as one of a judge's rubric, or a pairwise judge, which compares
    completions on the shared criteria only), else None."""
    judges = [s for s in recipe.reward_sources() if isinstance(s, JudgeSourceSpec)]
    shared = {c.name for s in judges
              for c in load_rubric(s.rubric or recipe.rubric, where=f"{recipe.source}: rubric").criteria}
    pairwise = [s.name for s in judges if (s.mode or (s.judge or recipe.judge).mode) == "pairwise"]

    def problem(meta: dict) -> tuple[str, str] | None:
        if meta.get("rubric") is None:
            return None
        if pairwise:
            return "rubric", (f"a record's own criteria need a judge in logprob or verdict mode; judge source "
                              f"'{pairwise[0]}' of {recipe.source} is pairwise")
        clash = sorted({c["name"] for c in meta["rubric"].get("criteria", [])} & shared)
        if clash:
            return "rubric.criteria", (f"{', '.join(clash)} is already a criterion of the recipe's rubric "
                                       f"({recipe.source}); give the record's own criterion another name")
        return None
    return problem


def check_training_data(recipe: Recipe) -> None:
    """What the recipe asks of its data, checked before training starts: every record carries the field each
    verifiable source checks against, and a record's own criteria do not reuse a name of a judge's rubric nor meet
    a pairwise judge (which compares completions on the shared criteria only). A record that fails is refused
    with the recipe's field and the data's file and line."""
    verifiable = [(i, s) for i, s in enumerate(recipe.rewards or []) if isinstance(s, VerifiableSourceSpec)]
    own_criteria_problem = own_criteria_rule(recipe)
    for path in filter(None, (recipe.data.train, recipe.data.eval)):
        res = read_records(path, recipe.data.columns)
        for line, rec in zip(res.record_lines, res.records):
            meta = json.loads(rec["metadata"])
            for i, spec in verifiable:
                has = rec["reference_answer"] is not None if spec.field == "reference_answer" else spec.field in meta
                if not has:
                    raise UserError(f"{recipe.source}: rewards[{i}].field: {path}:{line} (id {rec['id']}) has no "
                                    f"'{spec.field}' for the {spec.check} check of source '{spec.name}'")
            if (problem := own_criteria_problem(meta)) is not None:
                raise UserError(f"{path}:{line}: {problem[0]}: {problem[1]}")
