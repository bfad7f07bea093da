"""Planning a sample's judge requests: which requests (one per criterion in logprob mode, one verdict, or both
orders against each opponent in pairwise mode), their messages (the rubric first, the sample fenced after it,
the rubric in the user turn for judges without a system role), their parameters (a reasoning judge's thinking
off in one-token modes, its budget in verdict mode), a record's own criteria after the rubric's, and every request
cut to the judge's context."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from rlaif.config.rubric import RecordRubric, Rubric
from rlaif.data.samples import Sample
from rlaif.judge import logprob, pairwise, verdict
from rlaif.judge.fit import Fitter, cut_middle
from rlaif.judge.prompt import render, render_verdict, rubric_in_user_turn, rubric_prefix
from rlaif.portable.checks import json_items
from rlaif.portable.messages import reference_text


@dataclass
class Request:
    criteria: list[str]  # what this one request decides
    messages: list[dict]
    params: dict
    neutralised: int
    sample_first: bool | None = None  # pairwise: whether the judged completion is Response A
    specs: list = field(default_factory=list)  # the Criterion of each name (the rubric's, or the record's own)


class Planner:
    def __init__(self, rubric: Rubric, mode: str = "logprob", *, top_logprobs: int = 5, temperature: float = 0.0,
                 pairwise_against: str = "reference", pairwise_opponents: int = 3, fitter: Fitter | None = None,
                 rubric_in_user_turn: bool = False, reasoning_budget: int | None = None):
        self.rubric, self.mode = rubric, mode
        self.top_logprobs, self.temperature = top_logprobs, temperature
        self.uses_reference = any(c.uses_reference for c in rubric.criteria)
        self.pairwise_against, self.pairwise_opponents = pairwise_against, pairwise_opponents
        self.fitter = fitter or Fitter(None)  # cuts samples to the judge's context (rlaif/judge/fit.py)
        # judges without a system role (Gemma) get the rubric at the head of the user turn, still a shared prefix
        self.rubric_in_user_turn = rubric_in_user_turn
        self.reasoning_budget = reasoning_budget  # a reasoning judge: its thinking budget in verdict mode
        self._prefix: tuple = (None, "")  # (the rubric it was made from, logprob mode's system turn)
        self._params: dict[tuple, dict] = {}  # logprob mode's request parameters, per kind of criterion

    def plan(self, sample: Sample, opponents: list[str] | None = None) -> list[Request]:
        """The judge requests one sample needs: one per criterion (logprob), one for all (verdict), or two per
        criterion and opponent (pairwise, both orders)."""
        requests = self._requests(sample, opponents)
        if not self.rubric_in_user_turn and not self.reasoning_budget:
            return requests  # (what the two below would give back unchanged)
        return [replace(r, messages=self._turns(r.messages), params=self._thinking(r.params)) for r in requests]

    def _system(self) -> str:
        """Logprob mode's system turn, made once per rubric: every request of a run starts with it."""
        if self._prefix[0] is not self.rubric:
            self._prefix = (self.rubric, rubric_prefix(self.rubric))
        return self._prefix[1]

    def _turns(self, messages: list[dict]) -> list[dict]:
        return rubric_in_user_turn(messages) if self.rubric_in_user_turn else messages

    def _thinking(self, params: dict) -> dict:
        """A reasoning judge answers one-token requests with its thinking switched off (the template's
        `enable_thinking`); in verdict mode it thinks within its budget (request_params)."""
        if not self.reasoning_budget or params.get("max_tokens") != 1:
            return params
        extra = dict(params.get("extra_body") or {})
        extra["chat_template_kwargs"] = {**extra.get("chat_template_kwargs", {}), "enable_thinking": False}
        return params | {"extra_body": extra}

    def _requests(self, sample: Sample, opponents: list[str] | None) -> list[Request]:
        if self.mode == "pairwise":
            params = pairwise.request_params(self.top_logprobs, self.temperature)
            out = []
            for c in self.rubric.criteria:
                for other in opponents or []:
                    for first in (True, False):
                        a, b = (sample.response, other) if first else (other, sample.response)
                        rd = pairwise.render(self.rubric, c, sample.prompt, a, b)
                        out.append(Request([c.name], rd.messages, params, rd.neutralised, first))
            return out
        # the reference goes only where a criterion asks for it: the other requests keep a prompt that other samples
        # of the same record share
        own = self.own_criteria(sample)
        uses_reference = self.uses_reference or any(c.uses_reference for c in own)
        ref = reference_text(sample.reference) if uses_reference else None
        if self.mode == "verdict":  # one request for every criterion: it sees the reference if any asks for it
            rd = render_verdict(self.rubric, sample.prompt, sample.response, ref, own)
            params = verdict.request_params(self.rubric, self.temperature, reasoning_tokens=self.reasoning_budget or 0,
                                            own=own)
            specs = list(self.rubric.criteria) + own
            return [Request([c.name for c in specs], rd.messages, params, rd.neutralised, specs=specs)]
        out = []
        for c in list(self.rubric.criteria) + own:
            params = self._logprob_params(c)
            rd = render(self.rubric, c, sample.prompt, sample.response, ref if c.uses_reference else None,
                        own=c in own, system=self._system())
            out.append(Request([c.name], rd.messages, params, rd.neutralised, specs=[c]))
        return out

    def _logprob_params(self, c) -> dict:
        """A logprob request's parameters: one dict per kind of criterion, shared by every request of that kind
        (nothing changes a request's params; the client groups requests into batches by them, issue 27)."""
        labels = self.rubric.labels
        key = (c.kind == "scale", labels.pass_, labels.fail, self.top_logprobs, self.temperature)
        params = self._params.get(key)
        if params is None:
            params = self._params[key] = logprob.request_params(labels, self.top_logprobs, self.temperature, c)
        return params

    def own_criteria(self, sample: Sample) -> list:
        """The record's own criteria (its `rubric`, validated when the data was read), after the shared ones.
        Pairwise mode compares completions on the shared criteria only."""
        raw = sample.metadata.get("rubric")
        if raw is None or self.mode == "pairwise":
            return []
        return list(RecordRubric.model_validate(raw).criteria)

    def plan_sample(self, s: Sample, opponents: list[str] | None) -> list[Request]:
        if not self.rubric.per_item or self.mode == "pairwise":
            return self.plan(s, opponents)
        items, _ = json_items(s.response, self.rubric.per_item)
        # every item's requests decide the same criteria; score_samples averages them: the mean over items
        return [r for item in items for r in
                self.plan(Sample(s.id, s.prompt, json.dumps(item, ensure_ascii=False), s.metadata))]

    def fitted(self, s: Sample, opponents: list[str] | None) -> tuple[list[Request], bool]:
        """The sample's requests, each within the judge's context: the completion (and pairwise opponents) cut
        first, then the prompt, then the reference where a request carries it. (A per-item rubric's completion
        is JSON, not cut.) The flag says whether any request changed."""
        reqs, cut = self.plan_sample(s, opponents), False
        parts = ["prompt"] if self.rubric.per_item and self.mode != "pairwise" else ["response", "prompt"]
        if self._sends_reference(s):  # pairwise sends the reference as an opponent: cut with the response
            parts.append("reference")
        for part in parts:
            for _ in range(4):  # each cut is sized from the excess; a few rounds settle rounding
                over = max((self.fitter.over(r.messages, r.params.get("max_tokens") or 0) for r in reqs), default=0)
                if over <= 0:
                    return reqs, cut
                smaller, opponents_cut = self._cut(s, opponents, part, over)
                if smaller is None:
                    break  # nothing of this part left to cut
                again = self.plan_sample(smaller, opponents_cut)
                if [r.messages for r in again] == [r.messages for r in reqs]:
                    break  # the cut did not reach the requests
                s, opponents, reqs, cut = smaller, opponents_cut, again, True
        return reqs, cut  # still too long: sent as it is; the server's refusal is counted as a failure

    def _sends_reference(self, s: Sample) -> bool:
        if self.mode == "pairwise" or s.reference is None:
            return False
        return self.uses_reference or any(c.uses_reference for c in self.own_criteria(s))

    def _cut(self, s: Sample, opponents, part: str, over: int) -> tuple[Sample | None, list[str] | None]:
        f = self.fitter
        if part == "response":
            texts = [s.response] + list(opponents or [])
            if all(len(t) < 200 for t in texts):
                return None, opponents
            # a pairwise request holds the completion and one opponent: when both are long, each gives half
            pair = len(s.response) >= 200 and any(len(t) >= 200 for t in opponents or [])
            share = (over + 1) // 2 if pair else over
            cut = [cut_middle(t, f.chars_for(t, share)) if len(t) >= 200 else t for t in texts]
            return replace(s, response=cut[0]), (cut[1:] if opponents is not None else None)
        if part == "prompt":
            longest = max(range(len(s.prompt)), key=lambda i: len(s.prompt[i]["content"]), default=None)
            if longest is None or len(s.prompt[longest]["content"]) < 200:
                return None, opponents
            text = s.prompt[longest]["content"]
            prompt = [dict(m) for m in s.prompt]
            prompt[longest]["content"] = cut_middle(text, f.chars_for(text, over))
            return replace(s, prompt=prompt), opponents
        ref = reference_text(s.reference)
        if not ref or len(ref) < 200:
            return None, opponents
        return replace(s, metadata=s.metadata | {"reference_answer": cut_middle(ref, f.chars_for(ref, over))}), \
            opponents

    def opponents(self, samples: list[Sample]) -> list[list[str]]:
        """Pairwise opponents: the reference answer, or the next members of the sample's group (same prompt)."""
        if self.pairwise_against == "reference":
            return [[r] if (r := reference_text(s.reference)) else [] for s in samples]
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(json.dumps(s.prompt, sort_keys=True), []).append(i)
        out: list[list[str]] = [[] for _ in samples]
        for members in groups.values():
            k = min(self.pairwise_opponents, len(members) - 1)
            for pos, i in enumerate(members):
                out[i] = [samples[members[(pos + j) % len(members)]].response for j in range(1, k + 1)]
                if not out[i] and (r := reference_text(samples[i].reference)):
                    out[i] = [r]  # a group of one: fall back on the reference answer
        return out

