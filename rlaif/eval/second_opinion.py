"""A second opinion on the training judge: a deterministic rule, or another judge (or the same judge with another
prompt), given in the recipe's `eval:` block.

A policy under optimisation learns whatever the training judge rewards, its blind spots included (a tiny judge,
99% accurate on held-out samples, was fooled by glued words such as "pleasepleaseplease" within 150 steps). A
second opinion that the policy was not trained against shows it: when the training judge's agreement with it
falls during training, the policy is learning the judge, not the criterion.

    eval:
      truth_regex: '(?i)\\bplease\\b'       # a rule: passes when the regex matches the completion
      second_judge: recipes/judge-v2.yaml  # a recipe whose judge and rubric give the second opinion
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from rlaif.config.recipe import Recipe, load_recipe
from rlaif.data.samples import Sample
from rlaif.errors import UserError
from rlaif.factory import judge_endpoint, make_judge


@dataclass
class OpinionSource:
    """What the second opinion is: a rule, a judge recipe at a URL, or both (rule first)."""
    rule: re.Pattern | None = None
    judge_recipe: Recipe | None = None
    judge_url: str | None = None
    names: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.rule is not None or self.judge_recipe is not None

    @property
    def name(self) -> str:
        return " + ".join(self.names) or "none"

    def judge_pass(self, samples: list[Sample]) -> list[bool | None]:
        """The second judge's verdict per sample (reward > 0.5), None where it failed."""
        judge = make_judge(self.judge_recipe, self.judge_url)
        return [None if v.reward is None else v.reward > 0.5 for v in judge.score_sync(samples)]

    def verdicts(self, samples: list[Sample]) -> list[bool | None]:
        """The second opinion's pass/fail per sample: the rule's, else the second judge's."""
        if self.rule is not None:
            return [bool(self.rule.search(s.response)) for s in samples]
        if self.judge_recipe is not None:
            return self.judge_pass(samples)
        return [None] * len(samples)


def load_second_judge(recipe: Recipe) -> Recipe | None:
    path = recipe.eval.second_judge
    if not path:
        return None
    if not Path(path).exists():
        raise UserError(f"{recipe.source}: eval.second_judge: recipe not found: {path}")
    return load_recipe(path, check_files=False)


@contextlib.contextmanager
def endpoint_for(other: Recipe, main_recipe: Recipe, main_url: str):
    """The URL for another judge recipe: its own base_url; the main server when it names the same judge model
    (another prompt, same checkpoint: no second server); else a server launched for the duration."""
    if not other.judge.base_url and other.judge.model == main_recipe.judge.model \
            and other.judge.name == main_recipe.judge.name:
        yield main_url
        return
    with judge_endpoint(other, main_recipe.run_dir / "second_judge") as ep:
        yield ep.url


@contextlib.contextmanager
def open_second_opinion(recipe: Recipe, main_url: str):
    """The recipe's second opinion, with any server it needs running until the block ends."""
    rule = re.compile(recipe.eval.truth_regex) if recipe.eval.truth_regex else None
    other = load_second_judge(recipe)
    names = [f"rule {recipe.eval.truth_regex}"] if rule is not None else []
    if other is None:
        yield OpinionSource(rule=rule, names=names)
        return
    with endpoint_for(other, recipe, main_url) as url:
        names.append(f"judge {other.source}")
        yield OpinionSource(rule=rule, judge_recipe=other, judge_url=url, names=names)
