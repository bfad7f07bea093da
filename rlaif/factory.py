"""The one place that turns a recipe into running objects: the judge's endpoint (a server rlaif launches and
stops, a running one, or the judge in this process), the judge, the reward sources, and the run's reward
functions for TRL.

Everything above this module (evaluation, training, the command line) builds from a recipe through it;
everything below it knows no recipe (the judge, the reward sources) or only its own spec.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

from rlaif.common.console import lit, say
from rlaif.common.dist import broadcast_from_main, is_main_process, local_world_size, rank, spans_nodes, world_size
from rlaif.common.gpus import training_gpus
from rlaif.config.recipe import Recipe
from rlaif.config.rewards import (JudgeSourceSpec, LambdaSourceSpec, PythonSourceSpec, RewardModelSourceSpec,
                                  VerifiableSourceSpec)
from rlaif.config.yaml import path_exists
from rlaif.config.rubric import load_rubric
from rlaif.errors import UserError
from rlaif.judge.backend import JudgeBackend
from rlaif.judge.calibration import Calibration, load_calibration
from rlaif.judge.cascade import Cascade
from rlaif.judge.fit import Fitter
from rlaif.judge.http_client import ClientSettings, JudgeClient
from rlaif.judge.judgment_log import JudgmentLog, SourceLog
from rlaif.judge.local import LocalJudge, LocalSettings
from rlaif.judge.scorer import FailureSettings, Judge
from rlaif.judge.reward_model import LocalRewardModel
from rlaif.judge.rm_client import PoolingClient, classify_probe
from rlaif.judge.server import VLLMServer, has_gpu, served_context, start_servers
from rlaif.judge.supervisor import Supervisor
from rlaif.judge.templates import can_switch_thinking_off, has_system_role, load_tokenizer
from rlaif.judge.urls import is_loopback
from rlaif.nova.gateway import Gateway, boto3_env, build_app
from rlaif.rewards.canaries import Canaries
from rlaif.rewards.combined import CombinedSource
from rlaif.rewards.judge_source import JudgeSource
from rlaif.rewards.lambda_source import LambdaSource
from rlaif.rewards.python_source import PythonSource
from rlaif.rewards.reward_model_source import InProcess, RewardModelSource
from rlaif.rewards.source import RewardSource
from rlaif.rewards.trl_adapter import TRLReward
from rlaif.rewards.verifiable_source import VerifiableSource

LOCAL_URL = "in-process"  # the endpoint of judge.backend: transformers


@dataclass
class Endpoint:
    url: str | list[str]  # one server, or a pool of replicas (rlaif/judge/pool.py)
    start_s: float | None = None  # how long the launched server(s) took to become ready; None if not launched
    servers: tuple[VLLMServer, ...] = ()  # the servers rlaif launched, if it did
    supervisors: tuple[Supervisor, ...] = ()  # one per launched server, for a run (Endpoints)


def replica_log(run_dir: Path, i: int) -> Path:
    """The i-th judge replica's server log (its pid beside it, as .pid)."""
    return run_dir / ("judge_server.log" if i == 0 else f"judge_server.{i}.log")


def launch_replicas(recipe: Recipe, run_dir: Path, fixed_port: bool = False) -> list[VLLMServer]:
    """Start the recipe's judge servers (judge.serve.replicas, together) and return them once all are ready; if one
    fails, stop them all and raise its error. `fixed_port`: a taken port is an error, not a move to a free one
    (`rlaif judge serve`: the port is what the training processes are told)."""
    k = recipe.judge.serve.replicas
    servers = [VLLMServer.for_judge(recipe.judge, replica_log(run_dir, i), progress=say, replica=i,
                                    fixed_port=fixed_port) for i in range(k)]
    if k > 1:
        say(f"starting {k} judge replicas")
    start_servers(servers)
    return servers


def refuse_launch_across_nodes(who: str, host: str, api_key: str | None, key: str, instead: str) -> None:
    """Refuse a server launch (a judge's, a reward model's) that the run's other nodes could not reach: on
    loopback, or beyond it with no key (`key`: where the key is set). Every process decides it alike from its
    launcher's environment, so all stop together, none waiting for a URL that will never come."""
    if not spans_nodes() or (not is_loopback(host) and api_key):
        return
    where = f"at {host}, which only node 0 reaches" if is_loopback(host) else f"at {host} with no key ({key})"
    raise UserError(f"{who}: this run spans several nodes ({world_size()} processes, {local_world_size()} on this "
                    f"node), and the server it would launch on node 0 listens {where}. {instead}")


def check_launch(recipe: Recipe) -> None:
    """Refuse a judge launch that the run's other nodes could not reach (refuse_launch_across_nodes)."""
    j = recipe.judge
    refuse_launch_across_nodes(
        f"{recipe.source}: judge", j.serve.host, j.api_key, "judge.api_key or RLAIF_JUDGE_API_KEY",
        f"Start the judge on a node of its "
        f"own:\n  RLAIF_JUDGE_API_KEY=KEY rlaif judge serve {recipe.source} --set judge.serve.host=0.0.0.0 --port 8100\n"
        f"and give every training node --set judge.base_url=http://JUDGE_NODE:8100 (and RLAIF_JUDGE_API_KEY=KEY in its "
        f"environment). Or have rank 0 launch it on an address the nodes share, with a key: "
        f"--set judge.serve.host=0.0.0.0 (or this node's address) and RLAIF_JUDGE_API_KEY=KEY")


def check_reward_model_launch(spec: RewardModelSourceSpec) -> None:
    """Refuse a reward-model server launch that the run's other nodes could not reach, as the judge's."""
    refuse_launch_across_nodes(
        f"rewards: {spec.name}", spec.serve.host, spec.api_key, "its api_key or RLAIF_RM_API_KEY",
        f"Start the reward model on a node of its own:\n  VLLM_API_KEY=KEY vllm serve {spec.model} --runner pooling "
        f"--served-model-name {spec.label} --host 0.0.0.0 --port 8200\nand give the source base_url: "
        f"http://RM_NODE:8200 (and RLAIF_RM_API_KEY=KEY in every training node's environment). Or have rank 0 "
        f"launch it on an address the nodes share, with a key: serve.host: 0.0.0.0 (or this node's address) and "
        f"RLAIF_RM_API_KEY=KEY")


def check_devices(who: str, field: str, devices: list[str] | None) -> None:
    """Refuse server devices (a judge's or a reward model's serve.devices) that this node's training processes use
    too: vLLM reserves its share of each device as it starts, before the policy and its rollout engine load, which
    then do not fit."""
    if not devices:  # the server shares the trainer's devices on purpose (the one-GPU recipes) or is on a CPU
        return
    used, where = training_gpus(local_world_size())
    for i, d in enumerate(devices):
        both = [g for g in d.split(",") if g.strip() in used]
        if both:
            raise UserError(
                f"{who}{field}[{i}] '{d}' names GPU {', '.join(both)}, which the training "
                f"processes use too ({where}). Give "
                "the server GPUs of its own: train on the others (accelerate launch --gpu_ids and --num_processes, "
                f"or CUDA_VISIBLE_DEVICES for torchrun), or name others in {field}. To share a GPU on "
                "purpose, leave it unset and give the server a --gpu-memory-utilization share")


def check_judge_devices(recipe: Recipe) -> None:
    """Refuse judge devices (judge.serve.devices) that this node's training processes use too (check_devices)."""
    check_devices(f"{recipe.source}: ", "judge.serve.devices", recipe.judge.serve.devices)


@contextlib.contextmanager
def judge_endpoint(recipe: Recipe, run_dir: Path, base_url: str | list[str] | None = None):
    """Yield the judge's Endpoint: the given URL(s), the recipe's, or server(s) launched for the duration."""
    if recipe.judge.backend == "transformers":  # the judge runs in this process: nothing to launch or reach
        yield Endpoint(LOCAL_URL)
        return
    url = base_url or recipe.judge.base_url
    if url:
        yield Endpoint(url)
        return
    if not recipe.judge.serve.launch:
        raise UserError(f"{recipe.source}: judge: give judge.base_url or set judge.serve.launch: true")
    check_launch(recipe)

    def launch():
        check_judge_devices(recipe)  # the devices of the node that launches it: this one
        return launch_replicas(recipe, run_dir)
    with launched_by_main(launch, "judge") as ep:
        yield ep


@contextlib.contextmanager
def launched_by_main(launch, role: str):
    """Yield the Endpoint of server(s) that `launch()` starts in the main process and stops at the end; the other
    processes of a multi-process run get their URLs (or the main process's start error) by broadcast: one server
    pool per run, whoever uses it (the judge, a reward model)."""
    if world_size() > 1 and not is_main_process():
        shared = broadcast_from_main(None)
        if shared.get("error"):
            raise UserError(f"the main process could not start the {role} server: {shared['error']}")
        yield Endpoint(shared["url"], shared["start_s"])
        return
    try:
        servers = launch()
    except BaseException as e:  # the other processes wait for the URL: tell them, then fail here
        broadcast_from_main({"error": str(e).splitlines()[0] if str(e) else type(e).__name__})
        raise
    try:
        urls = [s.base_url for s in servers]
        ep = Endpoint(urls[0] if len(urls) == 1 else urls, max(s.start_s for s in servers), tuple(servers))
        broadcast_from_main({"url": ep.url, "start_s": ep.start_s})
        yield ep
    finally:
        for s in servers:
            s.stop()


def make_backend(recipe: Recipe, base_url: str | list[str]) -> JudgeBackend:
    """The recipe's judge backend: an HTTP client for vLLM server(s), or the judge model in this process."""
    if recipe.judge.backend == "transformers":
        return LocalJudge(LocalSettings.from_spec(recipe.judge))
    return JudgeClient(ClientSettings.from_spec(recipe.judge, base_url))


def make_judge(recipe: Recipe, base_url: str | list[str],
               judgment_log: Path | JudgmentLog | SourceLog | None = None) -> Judge:
    """The recipe's judge (rubric, mode, checks, fallbacks) at base_url; every verdict to judgment_log."""
    j = recipe.judge
    backend = make_backend(recipe, base_url)
    return Judge(load_rubric(recipe.rubric, where=f"{recipe.source}: rubric"), backend,
                 on_failure=FailureSettings.from_spec(j), judgment_log=judgment_log, mode=j.mode,
                 top_logprobs=j.top_logprobs, temperature=j.temperature, cache=j.cache, checks=recipe.checks,
                 judge_weight=j.weight, pairwise_against=j.pairwise_against, pairwise_opponents=j.pairwise_opponents,
                 fitter=Fitter(j.context_tokens, j.model, lambda: judge_context(recipe, backend)),
                 rubric_in_user_turn=rubric_in_user_turn(recipe),
                 reasoning_budget=reasoning_budget(recipe), calibration=judge_calibration(recipe))


def judge_calibration(recipe: Recipe) -> Calibration | None:
    """The recipe's judge.calibration, checked against its judge model and rubric."""
    if recipe.judge.calibration is None:
        return None
    rubric = load_rubric(recipe.rubric, where=f"{recipe.source}: rubric")
    return load_calibration(recipe.judge.calibration, recipe.judge.model, rubric.name)


def rubric_in_user_turn(recipe: Recipe) -> bool:
    """Whether the judge gets the rubric in its user turn: as the recipe says, or, for `auto`, when the judge's
    chat template (its tokenizer on this machine) has no system role."""
    turn = recipe.judge.rubric_turn
    if turn != "auto":
        return turn == "user"
    tok = load_tokenizer(recipe.judge.model)
    return tok is not None and not has_system_role(tok)


def reasoning_budget(recipe: Recipe) -> int | None:
    """A reasoning judge's thinking budget. In a one-token mode its thinking must be switched off: a template on
    this machine that cannot do that is refused now, not at the self-test."""
    j = recipe.judge
    if j.reasoning is None:
        return None
    if j.mode != "verdict" and (tok := load_tokenizer(j.model)) is not None and not can_switch_thinking_off(tok):
        raise UserError(f"{recipe.source}: judge.reasoning: the chat template of {j.model} cannot switch thinking "
                        f"off, which {j.mode} mode needs (one answer token); use judge.mode: verdict")
    return j.reasoning.budget_tokens


def judge_context(recipe: Recipe, backend: JudgeBackend) -> int | None:
    """The judge's context in tokens: the in-process model's, or what its server(s) report, or serve.max_model_len."""
    if isinstance(backend, LocalJudge):
        return getattr(backend.model.config, "max_position_embeddings", None)
    reported = [n for u in backend.urls if (n := served_context(u, recipe.judge.api_key)) is not None]
    return min(reported) if reported else recipe.judge.serve.max_model_len


def judge_reward(recipe: Recipe, base_url: str | list[str], judgment_log: Path | None = None) -> TRLReward:
    """The recipe's judge as a TRL reward function."""
    return TRLReward(JudgeSource(make_judge(recipe, base_url, judgment_log)))


def rank_log_path(run_dir: Path, stem: str = "judgments") -> Path:
    """Each process of a multi-GPU run writes its own judgment log, so lines never interleave."""
    r = rank()
    return run_dir / (f"{stem}.jsonl" if r == 0 else f"{stem}.rank{r}.jsonl")


def judge_recipe(recipe: Recipe, spec: JudgeSourceSpec) -> Recipe:
    """The recipe as a judge source sees it: its own rubric, mode and judge where it names them."""
    update = {k: v for k, v in (("rubric", spec.rubric), ("judge", spec.judge)) if v is not None}
    r = recipe.model_copy(update=update)
    if spec.mode:
        r = r.model_copy(update={"judge": r.judge.model_copy(update={"mode": spec.mode})})
    return r


class Endpoints:
    """The judge endpoints of a run, each opened once (sources that share a judge share its server) and closed
    when the run's stack unwinds. Each server rlaif launched gets one Supervisor, however many judges use it
    (`_supervise` makes each judge one of its listeners)."""

    def __init__(self, recipe: Recipe, run_dir: Path, base_url: str | None, stack: contextlib.ExitStack):
        self.recipe, self.run_dir, self.base_url, self.stack = recipe, run_dir, base_url, stack
        self._open: dict[str, Endpoint] = {}

    @staticmethod
    def _served(r: Recipe) -> str:
        """What makes two judges one server: the checkpoint and how it is reached or served, not the mode."""
        return r.judge.model_dump_json(include={"model", "served_model_name", "backend", "base_url", "api_key",
                                                "serve", "local"})

    def get(self, r: Recipe) -> Endpoint:
        key = self._served(r)
        if key not in self._open:
            ours = key == self._served(self.recipe)  # the recipe's own judge: --base-url may name it
            run_dir = self.run_dir if ours else self.run_dir / f"judge_{len(self._open)}"
            ep = self.stack.enter_context(judge_endpoint(r, run_dir, self.base_url if ours else None))
            # stopped before their servers (the stack unwinds in reverse); a restart under way is ended
            ep.supervisors = tuple(self.stack.enter_context(Supervisor(s)) for s in ep.servers)
            self._open[key] = ep
        return self._open[key]


def _supervise(ep: Endpoint, judge: Judge | RewardModelSource) -> None:
    """Each server rlaif launched is restarted if it dies mid-run (its Supervisor, one per server); meanwhile its
    requests go to the other replicas or wait for it, and its failures do not stop the run: `judge` (or a reward
    model source, which hears the same) hears of it."""
    if not ep.servers:
        return
    # a dead server's failures are the supervisor's to fix, even before its next look (it polls each second)
    judge.failures.hold = lambda: any(s.died() is not None for s in ep.servers)
    for server, sup in zip(ep.servers, ep.supervisors):
        url = server.base_url
        pool = getattr(judge.backend, "pool", None)  # an HTTP client's (JudgeClient, PoolingClient)
        if pool is not None:  # the pool sees a dead process before the supervisor does
            replica = pool.replicas[url]
            replica.dead = lambda s=server: s.died() is not None
            replica.answered = True  # it was ready when launched: worth waiting for while it restarts
        sup.listen(on_down=functools.partial(judge.server_down, url), on_up=functools.partial(judge.server_up, url),
                   on_give_up=functools.partial(judge.give_up, url))


def open_judge(recipe: Recipe, run_dir: Path, stack: contextlib.ExitStack) -> Judge:
    """The recipe's judge for a command that runs a while (`rlaif label`), reached as a training run reaches it:
    judge.base_url, or server(s) launched, supervised (restarted if one dies; meanwhile requests wait) and
    stopped when `stack` closes."""
    ep = Endpoints(recipe, run_dir, None, stack).get(recipe)
    judge = make_judge(recipe, ep.url)
    _supervise(ep, judge)
    stack.callback(judge.close)
    return judge


def _lambda_source(recipe: Recipe, spec: LambdaSourceSpec, endpoints: Endpoints, log: SourceLog) -> LambdaSource:
    """A Bedrock reward Lambda, with (unless turned off) a local Bedrock Converse gateway backed by the recipe's
    judge for the Lambda's boto3 calls."""
    env, defaults = {}, {}
    if spec.bedrock_gateway:
        ep = endpoints.get(recipe)
        gw = endpoints.stack.enter_context(Gateway(build_app(ep.url, recipe.judge.name,
                                                             judge_api_key=recipe.judge.api_key,
                                                             timeout_s=recipe.judge.timeout_s)))
        defaults = boto3_env(gw.url)
        # the endpoint always points here, dummy credentials only where the user has none: set while the Lambda is
        # imported and runs (LambdaSource), never for the rest of the process
        env = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": defaults.pop("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")}
        say(f"Bedrock Converse gateway at {gw.url} (judge '{recipe.judge.name}' at {ep.url}) for the Lambda")
    say(f"reward {spec.name}: lambda_handler in {lit(spec.file)} (your code; batches of {spec.batch_size}, "
        f"{spec.concurrency} at once)")
    return LambdaSource(spec.file, batch_size=spec.batch_size, concurrency=spec.concurrency, timeout_s=spec.timeout_s,
                        on_error=spec.on_error, neutral_reward=spec.neutral_reward, max_fail_rate=spec.max_fail_rate,
                        judgment_log=log, name=spec.name, env=env, env_defaults=defaults)


def reward_model_servers(spec: RewardModelSourceSpec, run_dir: Path) -> list[VLLMServer]:
    """The pooling servers (vLLM `--runner pooling`) a reward-model source launches, not started."""
    s = spec.serve
    extra = ["--runner", "pooling", *s.extra_args]
    if s.gpu_memory_utilization is not None and has_gpu():
        extra += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    servers = []
    for i in range(s.replicas):
        env = dict(s.env) | ({"CUDA_VISIBLE_DEVICES": s.devices[i]} if s.devices is not None else {})
        log_name = f"{spec.name}_server.log" if i == 0 else f"{spec.name}_server.{i}.log"
        servers.append(VLLMServer(spec.model, spec.label, host=s.host, port=s.port + i if s.port else None,
                                  python=s.python, dtype=s.dtype, max_model_len=s.max_model_len, extra_args=extra,
                                  env=env, log_path=run_dir / log_name, startup_timeout_s=s.startup_timeout_s,
                                  api_key=spec.api_key, nice=s.nice, progress=say, role="reward model",
                                  probe=classify_probe(spec.label)))
    return servers


@contextlib.contextmanager
def reward_model_endpoint(spec: RewardModelSourceSpec, run_dir: Path):
    """Yield a vLLM reward-model source's Endpoint: its base_url, or pooling server(s) launched by the main
    process for the duration (their URLs shared with the other processes), as the judge's are."""
    if spec.base_url:
        yield Endpoint(spec.base_url)
        return
    if not spec.serve.launch:
        raise UserError(f"rewards: {spec.name}: give base_url (a running `vllm serve {spec.model} --runner pooling`) "
                        "or set serve.launch: true")
    check_reward_model_launch(spec)

    def launch():
        check_devices(f"rewards: {spec.name}: ", "serve.devices", spec.serve.devices)  # this node's: it launches
        servers = reward_model_servers(spec, run_dir)
        start_servers(servers)
        return servers
    with launched_by_main(launch, "reward model") as ep:
        yield ep


def _reward_model_source(spec: RewardModelSourceSpec, endpoints: Endpoints, log: SourceLog) -> RewardModelSource:
    """A reward model in this process (backend: transformers) or behind vLLM pooling server(s), supervised and
    pooled as the judge's are."""
    # a folder `rlaif rm train` wrote (a hub reward model is downloaded first: its tokenizer renders the ids here)
    if not path_exists(spec.model, expand_user=True):
        raise UserError(f"rewards: {spec.name}: model folder not found: {spec.model} (train it first: rlaif rm train "
                        f"RECIPE --prefs PREFS.jsonl --out {spec.model})")
    common = dict(name=spec.name, model=spec.model, normalize=spec.normalize, max_fail_rate=spec.max_fail_rate,
                  judgment_log=log)
    if spec.backend == "transformers":
        loc = spec.local
        source = RewardModelSource(InProcess(LocalRewardModel(spec.model, device=loc.device, dtype=loc.dtype,
                                                              batch_size=loc.batch_size)), **common)
        say(f"reward {spec.name}: reward model {lit(spec.model)} in this process ({spec.normalize})")
        return source
    ep = endpoints.stack.enter_context(reward_model_endpoint(spec, endpoints.run_dir))
    ep.supervisors = tuple(endpoints.stack.enter_context(Supervisor(s)) for s in ep.servers)
    urls = [ep.url] if isinstance(ep.url, str) else list(ep.url)
    client = PoolingClient(urls, spec.label, spec.model, api_key=spec.api_key, batch_size=spec.batch_size,
                           timeout_s=spec.timeout_s, max_retries=spec.max_retries,
                           max_outage_wait_s=spec.max_outage_wait_s)
    source = RewardModelSource(client, **common)
    _supervise(ep, source)
    endpoints.stack.callback(client.pool.close)  # its probes stop with the run
    say(f"reward {spec.name}: reward model {lit(spec.model)} on vLLM's pooling runner at {ep.url} ({spec.normalize})")
    return source


def make_sources(recipe: Recipe, endpoints: Endpoints, log: JudgmentLog, *,
                 self_test: bool = True, canaries: bool = True) -> list[RewardSource]:
    """The recipe's reward sources, in its order, each writing to the run's judgment log. `canaries`: the first
    judge's live canaries, when the recipe has them (they watch a training run; they never change a reward)."""
    specs = recipe.reward_sources()
    judges = [s for s in specs if isinstance(s, JudgeSourceSpec)]
    for spec in judges:  # what a judge's template on this machine refuses, before any server starts
        reasoning_budget(judge_recipe(recipe, spec))
    out: list[RewardSource] = []
    for spec in specs:
        view = log.for_source(spec.name)
        if isinstance(spec, JudgeSourceSpec):
            r = judge_recipe(recipe, spec)
            ep = endpoints.get(r)
            judge = make_judge(r, ep.url, view)
            _supervise(ep, judge)
            if self_test:
                judge.self_test_sync()
                say(f"judge '{r.judge.name}' at {ep.url} passed its self-test")
            watching = None
            if canaries and spec is judges[0] and r.judge.canaries is not None:
                # their own judge (cache off: a changed judge must be asked again) and their own log
                watch = make_judge(r.model_copy(update={"judge": r.judge.model_copy(update={"cache": False})}),
                                   ep.url, JudgmentLog(rank_log_path(endpoints.run_dir, "canaries")))
                endpoints.stack.callback(watch.close)
                watching = Canaries(r.judge.canaries, watch, seed=recipe.seed)
            cascade = None
            if r.judge.cascade is not None:
                large_r = r.model_copy(update={"judge": r.judge.cascade.judge})
                large_ep = endpoints.get(large_r)
                large = make_judge(large_r, large_ep.url, JudgmentLog(rank_log_path(endpoints.run_dir, "cascade")))
                _supervise(large_ep, large)
                if self_test:
                    large.self_test_sync()
                say(f"judge cascade: verdicts of '{r.judge.name}' within {r.judge.cascade.band} of 0.5 go to "
                    f"'{large_r.judge.name}' at {large_ep.url}")
                cascade = Cascade(large, r.judge.cascade.band)
            out.append(JudgeSource(judge, spec.name, primary=spec is judges[0], canaries=watching, cascade=cascade))
        elif isinstance(spec, VerifiableSourceSpec):
            out.append(VerifiableSource(spec, view))
        elif isinstance(spec, PythonSourceSpec):
            out.append(PythonSource(spec, view))
        elif isinstance(spec, RewardModelSourceSpec):
            out.append(_reward_model_source(spec, endpoints, view))
        else:
            out.append(_lambda_source(recipe, spec, endpoints, view))
    return out


def uses_recipe_judge(recipe: Recipe) -> bool:
    """Whether the run talks to the recipe's own `judge:`: a judge source without a judge of its own, or a Lambda
    whose boto3 calls go to the Bedrock gateway it backs. Validation and the second opinion score with it."""
    return any((isinstance(s, JudgeSourceSpec) and s.judge is None)
               or (isinstance(s, LambdaSourceSpec) and s.bedrock_gateway) for s in recipe.reward_sources())


def compose(recipe: Recipe, sources: list[RewardSource]) -> RewardSource:
    """The reward of the recipe's sources: one source is the reward alone; several are one source, their weighted
    sum through a gate when one is essential (rlaif/rewards/combined.py), as rlaif/portable/composed.py computes it
    in the exported Lambda too."""
    if len(sources) == 1:
        return sources[0]
    specs = recipe.reward_sources()
    return CombinedSource(sources, [s.weight for s in specs], [s.essential for s in specs])


def make_rewards(recipe: Recipe, run_dir: Path, base_url: str | None,
                 stack: contextlib.ExitStack) -> tuple[list[TRLReward], str | None]:
    """(the run's reward function for TRL, in a list as GRPOTrainer takes it; the recipe judge's URL or None). One
    source is the reward alone; several are combined into one function (rlaif/rewards/combined.py: their weighted
    sum, through a gate when one is essential). What this starts (judge servers and their supervisors, a gateway)
    stops when `stack` closes."""
    log = JudgmentLog(rank_log_path(run_dir))
    stack.callback(log.close)
    endpoints = Endpoints(recipe, run_dir, base_url, stack)
    sources = make_sources(recipe, endpoints, log)
    # the judge that validation and the second opinion ask: the recipe's, when the run uses it
    url = endpoints.get(recipe).url if uses_recipe_judge(recipe) else None
    say(f"training {recipe.policy.model} on {', '.join(s.name for s in sources)}")
    return [TRLReward(compose(recipe, sources))], url


def apply_threads(recipe: Recipe) -> None:
    """The recipe's CPU thread count for torch (the judge server may share the cores)."""
    if recipe.torch_threads:
        import torch
        torch.set_num_threads(recipe.torch_threads)
