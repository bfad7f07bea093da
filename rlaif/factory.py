"""The one place that turns a recipe into running objects: the judge's endpoint (a server rlaif launches and
stops, a running one, or the judge in this process), the judge, and the run's reward for TRL.

Everything above this module (evaluation, training, the command line) builds from a recipe through it;
everything below it knows no recipe (the judge, the reward sources) or only its own spec.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from rlaif.common.console import say
from rlaif.common.dist import rank, world_size
from rlaif.config.recipe import Recipe
from rlaif.config.rubric import load_rubric
from rlaif.errors import UserError
from rlaif.judge.backend import JudgeBackend
from rlaif.judge.http_client import ClientSettings, JudgeClient
from rlaif.judge.local import LocalJudge, LocalSettings
from rlaif.judge.scorer import FailureSettings, Judge
from rlaif.judge.server import Supervisor, VLLMServer
from rlaif.nova.gateway import Gateway, boto3_env, build_app
from rlaif.rewards.judge_source import JudgeSource
from rlaif.rewards.lambda_source import LambdaSource
from rlaif.rewards.trl_adapter import TRLReward

LOCAL_URL = "in-process"  # the endpoint of judge.backend: transformers


@dataclass
class Endpoint:
    url: str
    start_s: float | None = None  # how long the launched server took to become ready; None if not launched
    server: VLLMServer | None = None  # the server rlaif launched, if it did


@contextlib.contextmanager
def judge_endpoint(recipe: Recipe, run_dir: Path, base_url: str | None = None):
    """Yield the judge's Endpoint: the given URL, the recipe's, or a server launched for the duration."""
    if recipe.judge.backend == "transformers":  # the judge runs in this process: nothing to launch or reach
        yield Endpoint(LOCAL_URL)
        return
    url = base_url or recipe.judge.base_url
    if url:
        yield Endpoint(url)
        return
    if not recipe.judge.serve.launch:
        raise UserError(f"{recipe.source}: judge: give judge.base_url or set judge.serve.launch: true")
    if world_size() > 1:
        raise UserError("several training processes would each start a judge server: start one with "
                        f"`rlaif judge serve {recipe.source}` and pass --set judge.base_url=URL")
    server = VLLMServer.for_judge(recipe.judge, run_dir / "judge_server.log", progress=say)
    with server:
        yield Endpoint(server.base_url, server.start_s, server)


def make_backend(recipe: Recipe, base_url: str | list[str]) -> JudgeBackend:
    """The recipe's judge backend: an HTTP client for vLLM server(s), or the judge model in this process."""
    if recipe.judge.backend == "transformers":
        return LocalJudge(LocalSettings.from_spec(recipe.judge))
    return JudgeClient(ClientSettings.from_spec(recipe.judge, base_url))


def make_judge(recipe: Recipe, base_url: str | list[str], judgment_log: Path | None = None) -> Judge:
    """The recipe's judge (rubric, mode, checks, fallbacks) at base_url; every verdict to judgment_log."""
    j = recipe.judge
    return Judge(load_rubric(recipe.rubric, where=f"{recipe.source}: rubric"), make_backend(recipe, base_url),
                 on_failure=FailureSettings.from_spec(j), judgment_log=judgment_log, mode=j.mode,
                 top_logprobs=j.top_logprobs, temperature=j.temperature, cache=j.cache, checks=recipe.checks,
                 judge_weight=j.weight, pairwise_against=j.pairwise_against, pairwise_opponents=j.pairwise_opponents)


def judge_reward(recipe: Recipe, base_url: str | list[str], judgment_log: Path | None = None) -> TRLReward:
    """The recipe's judge as a TRL reward function."""
    return TRLReward(JudgeSource(make_judge(recipe, base_url, judgment_log)))


def rank_log_path(run_dir: Path) -> Path:
    """Each process of a multi-GPU run writes its own judgment log, so lines never interleave."""
    r = rank()
    return run_dir / ("judgments.jsonl" if r == 0 else f"judgments.rank{r}.jsonl")


def _lambda_reward(recipe: Recipe, run_dir: Path, base_url: str | None,
                   stack: contextlib.ExitStack) -> tuple[TRLReward, str | None]:
    """The recipe's Bedrock reward Lambda, with (unless turned off) a local Bedrock Converse gateway backed by the
    judge for the Lambda's boto3 calls."""
    spec, url = recipe.reward, None
    if spec.bedrock_gateway:
        ep = stack.enter_context(judge_endpoint(recipe, run_dir, base_url))
        gw = stack.enter_context(Gateway(build_app(ep.url, recipe.judge.name, judge_api_key=recipe.judge.api_key,
                                                   timeout_s=recipe.judge.timeout_s)))
        env = boto3_env(gw.url)
        # the endpoint always points here; dummy credentials only where the user has none
        os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = env.pop("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
        for k, v in env.items():
            os.environ.setdefault(k, v)
        say(f"Bedrock Converse gateway at {gw.url} (judge '{recipe.judge.name}' at {ep.url}) for the Lambda")
        url = ep.url
    say(f"reward: lambda_handler in {spec.lambda_file} (your code; batches of {spec.batch_size}, "
        f"{spec.concurrency} at once)")
    source = LambdaSource(spec.lambda_file, batch_size=spec.batch_size, concurrency=spec.concurrency,
                          timeout_s=spec.timeout_s, on_error=spec.on_error, neutral_reward=spec.neutral_reward,
                          max_fail_rate=spec.max_fail_rate, judgment_log=rank_log_path(run_dir))
    return TRLReward(source), url


def make_reward(recipe: Recipe, run_dir: Path, base_url: str | None,
                stack: contextlib.ExitStack) -> tuple[TRLReward, str | None]:
    """(the run's reward for TRL, the judge's URL or None): the recipe's judge, or its Bedrock reward Lambda.
    What it starts (a judge server and its supervisor, a gateway) stops when `stack` closes."""
    if recipe.reward.lambda_file:
        return _lambda_reward(recipe, run_dir, base_url, stack)
    ep = stack.enter_context(judge_endpoint(recipe, run_dir, base_url))
    judge = make_judge(recipe, ep.url, rank_log_path(run_dir))
    if ep.server is not None:  # rlaif launched it, so rlaif restarts it if it dies mid-run
        server = ep.server
        # a dead server's failures are the supervisor's to fix, even before its next look (it polls each second)
        judge.failures.hold = lambda: server.died() is not None
        sup = Supervisor(server, on_down=judge.server_down, on_up=judge.server_up, on_give_up=judge.give_up).start()
        stack.callback(sup.stop)  # before the server stops (the stack unwinds in reverse)
    judge.self_test_sync()
    say(f"judge '{recipe.judge.name}' at {ep.url} passed its self-test; training {recipe.policy.model}")
    return TRLReward(JudgeSource(judge)), ep.url


def apply_threads(recipe: Recipe) -> None:
    """The recipe's CPU thread count for torch (the judge server may share the cores)."""
    if recipe.torch_threads:
        import torch
        torch.set_num_threads(recipe.torch_threads)
