"""`rlaif label`: AI preference labels for distilled RLAIF (label -> reward model -> RL).

Prompts in the recipe's dataset format (K completions sampled per prompt from the recipe's policy, as `rlaif eval`
samples: the recipe's eval temperature and token cap, seeded), or given pairs; every pair of a prompt's
completions judged by the recipe's judge (in both orders when it compares, scored one by one when it scores:
rlaif/eval/preferences.py); one TRL preference row per pair that is neither a tie nor a failure.

Work goes in chunks of `batch_prompts` prompts: a chunk is sampled together (its seed is the recipe's eval seed
plus the chunk's index, so a chunk samples the same completions in a resumed run as in an uninterrupted one),
judged together (every request at once), and saved together (rlaif/eval/label_store.py), which is what makes a
killed run resumable. A chunk the judge could not judge at all (every call failed), or after which the judge's
failure rate stops the run, is not saved: the run stops, and the same command continues it later.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from rlaif.config.recipe import Recipe
from rlaif.config.rubric import load_rubric
from rlaif.data.dataset import read_records
from rlaif.data.pairs import read_pairs
from rlaif.data.reader import Problem, ReadResult
from rlaif.data.samples import Sample
from rlaif.errors import UserError
from rlaif.eval.label_store import COUNTS, LabelStore, summary_path
from rlaif.eval.preferences import (MODES, Label, criteria_win_probability, is_tie, pairwise_label, pointwise_label,
                                    preference_row)
from rlaif.eval.sampling import load_policy, sample_completions
from rlaif.factory import apply_threads, open_judge
from rlaif.judge.scorer import Judge
from rlaif.rewards.source import record_metadata


@dataclass
class LabelOptions:
    out: Path
    prompts: str | None = None  # a dataset in the recipe's format: completions are sampled
    pairs: str | None = None  # or pairs given: {prompt, a, b} or TRL rows
    samples_per_prompt: int = 2
    max_prompts: int | None = None
    tie_epsilon: float = 0.05  # |p - 0.5| at or below this: a tie, left out
    batch_prompts: int = 16  # prompts sampled, judged and saved together


@dataclass
class Unit:
    """One prompt and its completions (sampled, or the given pair)."""
    id: str
    prompt: list[dict]
    metadata: dict
    completions: list[str] | None = None
    line: int = 0  # in the input file
    content: str = ""  # digest of what its rows are made from (content_digest), read before sampling


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def content_digest(unit: Unit) -> str:
    """What a prompt's rows are made from, as far as the input says: its messages and metadata (a reference
    answer, a record's own rubric), and the completions when they are given. A resumed run compares it with the
    digest saved when the id was done: the same id over other content is another record."""
    return digest({"prompt": unit.prompt, "metadata": unit.metadata, "completions": unit.completions})


def options_from(r: Recipe, out: Path, prompts: str | None = None, pairs: str | None = None) -> LabelOptions:
    """The recipe's labeling: block as LabelOptions (prompts: the given file, labeling.prompts, or data.train)."""
    spec = r.labeling
    prompts = prompts or (None if pairs else spec.prompts or r.data.train)
    if not pairs and not prompts:
        raise UserError(f"{r.source}: data.train: no prompts (or pass --prompts FILE or --pairs FILE)")
    return LabelOptions(out=out, prompts=prompts, pairs=pairs, samples_per_prompt=spec.samples_per_prompt,
                        max_prompts=spec.max_prompts, tie_epsilon=spec.tie_epsilon, batch_prompts=spec.batch_prompts)


def check_options(o: LabelOptions) -> None:
    if o.samples_per_prompt < 2:
        raise UserError("--samples-per-prompt: at least 2 (a pair needs two completions)")
    if o.max_prompts is not None and o.max_prompts < 1:
        raise UserError("--max-prompts: give a positive number")
    if not 0 <= o.tie_epsilon < 0.5:
        raise UserError("--tie-epsilon: a number in [0, 0.5)")
    if o.batch_prompts < 1:
        raise UserError("--batch-prompts: give a positive number")


# -- what to label ---------------------------------------------------------------------------------------------
def read_units(recipe: Recipe, o: LabelOptions) -> tuple[list[Unit], list[Problem]]:
    """The prompts (or pairs) to label, in file order, and the problems of the lines left out. An id seen before
    is a problem too: it names the rows written, and a resumed run skips by it."""
    if o.pairs:
        res: ReadResult = read_pairs(o.pairs)
        units = [Unit(r["id"], r["prompt"], r["metadata"], r["completions"]) for r in res.records]
    else:
        res = read_records(o.prompts, recipe.data.columns)
        units = [Unit(r["id"], r["prompt"], record_metadata(r)) for r in res.records]
    path = o.pairs or o.prompts
    problems, first_line, kept = list(res.problems), {}, []
    for unit, line in zip(units, res.record_lines):
        unit.line, unit.content = line, content_digest(unit)
        if unit.id in first_line:
            problems.append(Problem(str(path), line, "id", f"'{unit.id}' is also the id of line "
                                    f"{first_line[unit.id]}; ids name the rows written, so they must be unique"))
            continue
        first_line[unit.id] = line
        kept.append(unit)
    problems.sort(key=lambda p: p.line)
    return kept[:o.max_prompts] if o.max_prompts else kept, problems


def settings_of(recipe: Recipe, o: LabelOptions) -> dict:
    """What a resumed run must share with the run it continues, or its rows would be labelled another way
    (--max-prompts may change: prompts done are skipped wherever they fall). Contents, not names: the rubric as
    loaded (a file edited under the same path, or a built-in that changed, labels differently) and the
    calibration file's bytes, as digests beside a readable name."""
    j, e = recipe.judge, recipe.eval
    rubric = load_rubric(recipe.rubric, where=f"{recipe.source}: rubric")
    s = {"input": str(o.pairs or o.prompts), "judge_model": j.model, "judge_mode": j.mode,
         "rubric": f"{rubric.name} sha256:{digest(rubric.model_dump(mode='json', by_alias=True))}",
         "tie_epsilon": o.tie_epsilon,
         # how every request is made and read (judge.temperature samples the answer token; the context cuts
         # long pairs; the rubric's turn and a reasoning judge's settings change the prompt)
         "judge.temperature": j.temperature, "judge.top_logprobs": j.top_logprobs,
         "judge.context_tokens": j.context_tokens, "judge.rubric_turn": j.rubric_turn,
         "judge.reasoning": None if j.reasoning is None else j.reasoning.model_dump(mode="json")}
    if j.mode != "pairwise":  # a score of one response: the checks and their weight beside the judge's, and the
        # calibration of P(pass), join it (pairwise compares with the judge alone)
        s |= {"checks": digest({"checks": [c.model_dump(mode="json", by_alias=True) for c in recipe.checks],
                                "judge.weight": j.weight}) if recipe.checks else None,
              "judge.calibration": None if j.calibration is None else _file_digest(j.calibration)}
    if not o.pairs:  # the chunk size too: it sets which prompts share a seed
        s |= {"policy": recipe.policy.model, "samples_per_prompt": o.samples_per_prompt,
              "temperature": e.temperature, "max_new_tokens": e.max_new_tokens, "seed": e.seed,
              "batch_prompts": o.batch_prompts, "policy.reasoning": recipe.policy.reasoning,
              "template_kwargs": recipe.template_kwargs()}
    return s


def _file_digest(path: str) -> str:
    try:
        return f"{path} sha256:{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}"
    except OSError:
        return path  # the judge refuses it when it loads it, with the reason


def check_content(units: list[Unit], store: LabelStore, path: str) -> None:
    """Refuse a resumed run in which a done id now names another record. Relabelling it instead would leave the
    first record's rows and counts in OUT under the same id; refusing leaves the choice to the user."""
    changed = [u for u in units if u.id in store.content and store.content[u.id] != u.content]
    if changed:
        u, more = changed[0], f" ({len(changed) - 1} more record(s) too)" if len(changed) > 1 else ""
        raise UserError(f"{path}:{u.line}: record '{u.id}' is not the record labelled as '{u.id}' in {store.out}: "
                        f"its prompt, metadata or completions differ{more}. An id made from a line number "
                        f"(`<file stem>-<line>`, for a record without one) changes when a line above it is added or "
                        f"removed. Restore the file as it was labelled, give every record its own `id`, or give "
                        f"another --out")


# -- judging a chunk -------------------------------------------------------------------------------------------
def _pairs(unit: Unit):
    return itertools.combinations(range(len(unit.completions)), 2)


Todo = list[tuple[Unit, int, int]]  # pairs of a prompt's completions (their indices) to be judged


def judge_pointwise(judge: Judge, todo: Todo) -> dict[tuple[str, int, int], Label | None]:
    """Each completion of the pairs scored once (the same text twice in a prompt: once); a label per pair by
    Bradley-Terry (None: a judgment of the pair failed)."""
    scored: dict[tuple[str, str], int] = {}  # (prompt id, text) -> its sample
    samples = []
    for u, i, j in todo:
        for k in (i, j):
            if (u.id, u.completions[k]) not in scored:
                scored[(u.id, u.completions[k])] = len(samples)
                samples.append(Sample(f"{u.id}#{k}", u.prompt, u.completions[k], u.metadata))
    verdicts = judge.score_sync(samples) if samples else []
    out = {}
    for u, i, j in todo:
        a, b = (verdicts[scored[(u.id, u.completions[k])]] for k in (i, j))
        ok = not (a.failed or b.failed or a.reward is None or b.reward is None)
        out[(u.id, i, j)] = pointwise_label(a.reward, b.reward, a.rationale, b.rationale) if ok else None
    return out


def judge_pairwise(judge: Judge, todo: Todo) -> dict[tuple[str, int, int], Label | None]:
    """Each pair asked in both orders on every criterion (rlaif/judge/pairwise.py, as the judge plans it: the
    completion as Response A, then as Response B); per order, P(a wins) combined over the criteria by
    criteria_win_probability (rlaif/eval/preferences.py: their weighted mean, not the rubric's aggregation)."""
    weights = {c.name: c.weight for c in judge.rubric.criteria}
    keys, plans = [], []
    for u, i, j in todo:
        reqs, cut = judge.planner.fitted(Sample(u.id, u.prompt, u.completions[i], u.metadata), [u.completions[j]])
        judge.totals["truncated"] += cut  # as score_samples counts a cut sample
        keys.append((u.id, i, j))
        plans.append(reqs)

    async def run():
        try:
            return await judge.ask([r for p in plans for r in p])
        finally:
            await judge.backend.aclose()
    answers = iter(asyncio.run(run()))
    out = {}
    for key, reqs in zip(keys, plans):
        orders: dict[bool, dict[str, float]] = {True: {}, False: {}}
        failed = False
        for req in reqs:
            res = next(answers)
            if res["scores"] is None:
                failed = True
                continue
            for name in req.criteria:  # the answer is P(Response A wins): turned round to a's side
                v = res["scores"][name]
                orders[req.sample_first][name] = v if req.sample_first else 1.0 - v
        out[key] = None if failed else pairwise_label(criteria_win_probability(orders[True], weights),
                                                      criteria_win_probability(orders[False], weights))
    return out


def label_chunk(judge: Judge, units: list[Unit], tie_epsilon: float) -> tuple[list[dict], dict]:
    """The rows and counts of a chunk's prompts (every completion already there)."""
    counts = dict.fromkeys(COUNTS, 0)
    counts["prompts"] = len(units)
    todo: Todo = []
    for u in units:
        for i, j in _pairs(u):
            if u.completions[i] == u.completions[j]:
                counts["identical"] += 1  # the same text twice: nothing to prefer, not worth a judge call
            else:
                todo.append((u, i, j))
    calls_before, cut_before = judge.totals["calls"], judge.totals["truncated"]
    failed_before = judge.totals["failures"] + judge.totals["parse_failures"]
    if not todo:
        labels = {}
    elif judge.mode == "pairwise":
        labels = judge_pairwise(judge, todo)
    else:
        labels = judge_pointwise(judge, todo)
    counts["judge_calls"] = judge.totals["calls"] - calls_before
    counts["truncated"] = judge.totals["truncated"] - cut_before
    counts["failed_calls"] = judge.totals["failures"] + judge.totals["parse_failures"] - failed_before
    rows = []
    for u, i, j in todo:
        label = labels[(u.id, i, j)]
        if label is None:
            counts["failures"] += 1
            continue
        if label.p_orders is not None:
            counts["both_orders"] += 1
            counts["flips"] += bool(label.position_flip)
        if is_tie(label.p_a, tie_epsilon):
            counts["ties"] += 1
            continue
        rows.append(preference_row(u.id, i, j, u.prompt, u.completions[i], u.completions[j], label, judge.mode,
                                   u.metadata))
    counts["pairs"] = len(rows)
    return rows, counts


def stop_reason(judge: Judge, counts: dict, failed_calls: int) -> str | None:
    """Why the run stops before saving this chunk: the judge's failure-rate stop, or a chunk of which every judge
    call failed (a judge that is down: its prompts are not done, they are not judged)."""
    if judge.should_stop:
        return judge.stop_reason
    if counts["judge_calls"] and failed_calls >= counts["judge_calls"]:
        return f"every one of this chunk's {counts['judge_calls']} judge calls failed"
    return None


# -- the run ---------------------------------------------------------------------------------------------------
def summarise(store: LabelStore, o: LabelOptions, mode: str, n_units: int, problems: list[Problem],
              calls_this_run: int, stopped: str | None) -> dict:
    t = store.totals
    s = {"out": str(o.out), "input": str(o.pairs or o.prompts), "mode": MODES[mode], "prompts": t["prompts"],
         "prompts_in_input": n_units, "pairs_written": t["pairs"], "ties": t["ties"], "failures": t["failures"],
         "identical": t["identical"], "truncated": t["truncated"], "malformed_lines": len({p.line for p in problems}),
         "flip_rate": round(t["flips"] / t["both_orders"], 4) if t["both_orders"] else None,
         "judge_calls": t["judge_calls"], "judge_failed_calls": t["failed_calls"], "judge_calls_this_run": calls_this_run,
         "complete": stopped is None and t["prompts"] >= n_units, "stopped": stopped}
    path = summary_path(o.out)
    path.write_text(json.dumps(s, indent=2) + "\n", encoding="utf-8")
    return s


def label(recipe: Recipe, o: LabelOptions) -> dict:
    """Label the prompts (or pairs) of `o` into o.out, picking up a run of the same settings where it stopped.
    Returns the summary (also written to OUT.summary.json); `stopped` says why the judge stopped it, if it did."""
    check_options(o)
    if recipe.judge.mode not in MODES:
        raise UserError(f"{recipe.source}: judge.mode: '{recipe.judge.mode}' cannot label pairs")
    apply_threads(recipe)
    units, problems = read_units(recipe, o)
    for p in problems:
        print(f"error: {p} (line left out)", file=sys.stderr)
    if not units:
        raise UserError(f"{o.pairs or o.prompts}: no valid records to label")
    store = LabelStore(o.out, settings_of(recipe, o))
    store.open()
    check_content(units, store, str(o.pairs or o.prompts))
    if store.dropped_rows:
        print(f"{o.out}: {store.dropped_rows} row(s) of an unfinished chunk dropped; labelling them again",
              file=sys.stderr)
    # from here this run owns OUT: an earlier run's summary would look current while it runs, or after a kill
    summary_path(o.out).unlink(missing_ok=True)
    stopped, tally = "interrupted", {"judge_calls": 0}
    try:
        stopped = run_chunks(recipe, o, units, store, tally)
    except KeyboardInterrupt:
        stopped = "interrupted (Ctrl-C or SIGTERM); run the same command to continue"
        raise
    except Exception as e:
        stopped = f"interrupted: {e}"
        raise
    finally:  # also when interrupted: what was saved, and that the run is not complete
        summary = summarise(store, o, recipe.judge.mode, len(units), problems, tally["judge_calls"],
                            stopped)
    return summary


def run_chunks(recipe: Recipe, o: LabelOptions, units: list[Unit], store: LabelStore, tally: dict) -> str | None:
    """Label the chunks with prompts not done yet; why the judge stopped the run, or None. tally["judge_calls"]:
    the judge calls this run made (a chunk's too when it was not saved), kept up as it goes for the summary of
    an interrupted run."""
    done = store.done
    chunks = [units[i:i + o.batch_prompts] for i in range(0, len(units), o.batch_prompts)]
    pending = [(c, chunk) for c, chunk in enumerate(chunks) if any(u.id not in done for u in chunk)]
    if not pending:
        return None
    from tqdm import tqdm  # as transformers and datasets draw theirs; not needed for `rlaif --help`

    with contextlib.ExitStack() as stack:
        judge = open_judge(recipe, recipe.run_dir, stack)
        judge.self_test_sync()
        policy = None if o.pairs else load_policy(recipe.policy.model, reasoning=recipe.policy.reasoning)
        bar = tqdm(total=len(units), initial=sum(u.id in done for u in units), desc="labelling", unit="prompt",
                   file=sys.stderr, dynamic_ncols=True)
        with bar:
            for c, chunk in pending:
                if policy is not None:
                    sample_chunk(recipe, policy, chunk, o.samples_per_prompt, c)
                todo = [u for u in chunk if u.id not in done]
                failed_before = judge.totals["failures"] + judge.totals["parse_failures"]
                rows, counts = label_chunk(judge, todo, o.tie_epsilon)
                tally["judge_calls"] += counts["judge_calls"]
                failed = judge.totals["failures"] + judge.totals["parse_failures"] - failed_before
                if (stopped := stop_reason(judge, counts, failed)) is not None:
                    return stopped
                store.append(rows, [u.id for u in todo], counts, [u.content for u in todo])
                bar.update(len(todo))
                bar.set_postfix(pairs=store.totals["pairs"], ties=store.totals["ties"],
                                failures=store.totals["failures"])
    return None


def sample_chunk(recipe: Recipe, policy, chunk: list[Unit], k: int, index: int) -> None:
    """K completions for every prompt of the chunk, done ones too: a chunk is sampled whole, with its own seed, so
    that its completions do not depend on where an earlier run stopped."""
    model, tok = policy
    e = recipe.eval
    got = sample_completions(model, tok, [u.prompt for u in chunk], k=k, temperature=e.temperature,
                             max_new_tokens=e.max_new_tokens, seed=e.seed + index, batch_prompts=len(chunk),
                             template_kwargs=recipe.template_kwargs())
    for u, completions in zip(chunk, got):
        u.completions = completions
