# The body of the reward Lambda that `rlaif nova export-lambda` writes. It is not imported by rlaif: the
# exporter puts CONFIG and the modules of rlaif/portable (the code that decides a reward, which rlaif runs too)
# above it, so that the Lambda and rlaif judge a sample the same way. Standard library and boto3 only, as the
# Lambda runtime provides.

log = logging.getLogger("rlaif_reward_lambda")
log.setLevel(os.environ.get("LOG_LEVEL", "INFO"))

CONCURRENCY = int(os.environ.get("JUDGE_CONCURRENCY", "8"))
MAX_ATTEMPTS = int(os.environ.get("JUDGE_MAX_ATTEMPTS", "4"))
TIMEOUT_S = float(os.environ.get("JUDGE_TIMEOUT_S", "60"))
NEUTRAL_REWARD = float(os.environ.get("NEUTRAL_REWARD", CONFIG["neutral_reward"]))
LOG_SAMPLES = os.environ.get("LOG_SAMPLES", "0") == "1"  # sample text stays out of the logs unless asked
# Bedrock's transient errors: retried with exponential backoff and full jitter
RETRYABLE = {"ThrottlingException", "ServiceUnavailableException", "ModelTimeoutException",
             "InternalServerException", "ModelNotReadyException"}


class JudgeError(Exception):
    pass


_client = None
_use_schema = [CONFIG.get("structured_output", True)]


def _bedrock():
    global _client
    if _client is None:
        import boto3
        from botocore.config import Config
        # botocore's own retries are off: the loop in converse() retries, with backoff, what is worth retrying
        _client = boto3.client("bedrock-runtime", config=Config(
            retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=10, read_timeout=TIMEOUT_S,
            max_pool_connections=max(10, CONCURRENCY)))
    return _client


def _model_id() -> str:
    mid = os.environ.get("JUDGE_MODEL_ID") or CONFIG.get("model_id")
    if not mid:
        raise JudgeError("set the JUDGE_MODEL_ID environment variable to the judge's Bedrock model id")
    return mid


def converse(system: str, user: str, schema: dict, max_tokens: int) -> str:
    """One judge call through Bedrock's Converse API, for a verdict of `schema`; the reply's text. Raises
    JudgeError when it gives up."""
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

    req = {"modelId": _model_id(), "system": [{"text": system}],
           "messages": [{"role": "user", "content": [{"text": user}]}],
           "inferenceConfig": {"maxTokens": max_tokens, "temperature": CONFIG["temperature"],
                               "topP": 1.0}}
    last = "no attempt made"
    for attempt in range(MAX_ATTEMPTS):
        if _use_schema[0]:
            req["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
                "name": "verdict", "schema": json.dumps(schema)}}}}
        else:
            req.pop("outputConfig", None)
        try:
            resp = _bedrock().converse(**req)
            return "".join(b["text"] for b in resp["output"]["message"]["content"] if "text" in b)
        except ParamValidationError as e:
            if "outputConfig" in req:  # an older boto3 without structured outputs: ask in words only
                _use_schema[0] = False
                log.warning("this boto3 has no Converse outputConfig; asking for the JSON verdict in words only")
                continue
            raise JudgeError(f"invalid Converse request: {e}") from None
        except ClientError as e:
            err = e.response.get("Error", {})
            code, last = err.get("Code", ""), f"{err.get('Code', '')}: {err.get('Message', '')}"
            if code == "ValidationException" and "outputConfig" in req:
                _use_schema[0] = False  # a judge model without structured outputs: ask in words only
                log.warning("the judge model refused structured outputs (%s); asking in words only", last)
                continue
            if code not in RETRYABLE:
                raise JudgeError(last) from None
        except BotoCoreError as e:  # connection reset, read timeout: transient
            last = f"{type(e).__name__}: {e}"
        if attempt < MAX_ATTEMPTS - 1:
            time.sleep(random.uniform(0, min(20.0, 0.5 * 2 ** attempt)))
    raise JudgeError(f"gave up after {MAX_ATTEMPTS} attempts: {last}")


CHECKS = [StdlibCheck(c) for c in CONFIG["checks"]]


class RubricJudge:
    """One judge source's rubric, judged in verdict mode through Converse."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.criteria = [(c["name"], c["kind"]) for c in cfg["criteria"]]
        self.weights = [(c["name"], c["weight"], c["essential"]) for c in cfg["criteria"]]
        self.formula = (parse(cfg["formula"], {n for n, _ in self.criteria}) if cfg["aggregation"] == "formula"
                        else None)


JUDGES = {name: RubricJudge(cfg) for name, cfg in CONFIG["judges"].items()}
SOURCES = CONFIG["sources"]


# -- one sample, judged -----------------------------------------------------------------------------------------------
def completion_of(sample) -> tuple[list, str] | None:
    """(the prompt, the completion) of a reward-Lambda event sample, or None when it has no completion to score."""
    msgs = sample.get("messages") if isinstance(sample, dict) else None
    if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict) \
            or msgs[-1].get("role") not in ("assistant", "nova_assistant"):
        return None
    prompt = [{"role": m.get("role"), "content": text_of(m.get("content")) or ""}
              for m in msgs[:-1] if isinstance(m, dict)]
    return prompt, text_of(msgs[-1].get("content")) or ""


def invalid_result(sample) -> tuple[dict, str]:
    # AWS's graders give 0 to a sample without a completion to judge
    sample_id = sample.get("id") if isinstance(sample, dict) else None
    return lambda_result(sample_id, 0.0, [{"name": "invalid_sample", "value": 1.0, "type": "Metric"}]), \
        "invalid sample: no messages ending with the assistant turn"


def score_sample(sample, judge: RubricJudge | None = None, empty_is_zero: bool = True) -> tuple[dict, str]:
    """(the judge's answer for one sample, a log line). Never raises: a judge failure, or an error nobody foresaw
    (a malformed Converse reply, a bug), is the neutral reward for this sample, counted as judge_failed, since an
    exception would fail Bedrock's whole call. `empty_is_zero`: an empty completion scores 0 without the judge
    (the Nova guidance's rule, and `rlaif judge score`'s); a judge among a recipe's rewards asks, as in training."""
    judge = judge or next(iter(JUDGES.values()))
    try:
        return _score_sample(sample, judge, empty_is_zero)
    except Exception as e:
        sample_id = sample.get("id") if isinstance(sample, dict) else None
        return lambda_result(sample_id, NEUTRAL_REWARD, reward_metrics({}, True, {})), \
            f"error ({type(e).__name__}: {e}): neutral {NEUTRAL_REWARD}"


def _score_sample(sample, judge: RubricJudge, empty_is_zero: bool) -> tuple[dict, str]:
    sample_id = sample.get("id") if isinstance(sample, dict) else None
    got = completion_of(sample)
    if got is None:
        return invalid_result(sample)
    prompt, response = got
    names = [n for n, _ in judge.criteria]
    meta = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
    try:  # the record's own criteria, judged after the rubric's, as rlaif judges them
        own = record_criteria(meta["rubric"]) if meta.get("rubric") is not None else []
        clash = sorted({c["name"] for c in own} & set(names))
        if clash:
            raise ValueError(f"rubric.criteria: {', '.join(clash)} is already a criterion of the recipe's rubric")
    except ValueError as e:
        return lambda_result(sample_id, 0.0, [{"name": "invalid_sample", "value": 1.0, "type": "Metric"}]), \
            f"invalid sample: metadata.{e}"
    if empty_is_zero and not response.strip():
        return empty_result(sample_id, names), "empty response: 0"
    gates_ok, check_scores, details = run_checks(CHECKS, response, user_text(prompt))
    if judge.cfg["per_item"]:
        items, why = json_items(response, judge.cfg["per_item"])
        check_scores["per_item_json"], details["per_item_json"] = float(items is not None), why
        gates_ok = gates_ok and items is not None
    if not gates_ok:
        failing = ", ".join(k for k, v in check_scores.items() if v == 0.0)
        return lambda_result(sample_id, 0.0, reward_metrics({}, False, check_scores)), \
            f"gated by {failing}: 0 without the judge"
    texts = [response] if not judge.cfg["per_item"] else [json.dumps(item, ensure_ascii=False) for item in items]
    asked = judge.criteria + [(c["name"], c["kind"]) for c in own]
    uses_reference = judge.cfg["uses_reference"] or any(c["uses_reference"] for c in own)
    ref = reference_text(event_reference(sample)) if uses_reference else None
    schema = verdict_schema(asked, judge.cfg["pass_label"], judge.cfg["fail_label"])
    got = {n: [] for n, _ in asked}
    rationales = []
    try:
        for text in texts:
            block, _ = sample_block(prompt, text, ref)
            if own:
                block += "\n" + own_criteria_block(own)
            scores, rationale = scores_from_text(converse(judge.cfg["system"], block, schema,
                                                          verdict_max_tokens(len(asked))),
                                                 asked, judge.cfg["pass_label"], judge.cfg["fail_label"])
            for n in got:
                got[n].append(scores[n])
            rationales.append(rationale)
    except (JudgeError, ParseError) as e:
        return lambda_result(sample_id, NEUTRAL_REWARD, reward_metrics({}, True, check_scores)), \
            f"judge failed ({e}): neutral {NEUTRAL_REWARD}"
    scores = {n: math.fsum(v) / len(v) for n, v in got.items()}  # as statistics.fmean in rlaif
    value = aggregate_scores({n: scores[n] for n in names}, judge.weights, judge.cfg["aggregation"], judge.formula)
    value = with_own_criteria(value, sum(w for _, w, _ in judge.weights),
                              [(c["name"], c["weight"], c["essential"]) for c in own], scores,
                              judge.cfg["aggregation"] == "gate")
    reward = combine(value, CHECKS, check_scores, CONFIG["judge_weight"])
    return lambda_result(sample_id, reward, reward_metrics({n: scores[n] for n in names}, False, check_scores)), \
        " ".join(rationales)


def judge_failed(result: dict) -> bool:
    return any(m["name"] == "judge_failed" and m["value"] == 1.0 for m in result["metrics_list"])


# -- a recipe's rewards: every source, combined as in training ---------------------------------------------------------
_functions: dict = {}


def bundled_function(module: str, function: str):
    """A Python source's function, from its module as the export carried it (run once, on first use, as rlaif
    imports it when the reward is built)."""
    key = f"{module}:{function}"
    if key not in _functions:
        # under a name of its own, so that it never stands in for a module of that name in the same process; in
        # sys.modules, as an import would put it, since its own code (a dataclass) may look for itself there
        name = f"rlaif_bundled_{module.replace('.', '_')}"
        mod = types.ModuleType(name)
        mod.__file__ = f"{module}.py"
        sys.modules[name] = mod
        exec(compile(MODULE_SOURCES[module], f"{module}.py", "exec"), mod.__dict__)
        _functions[key] = getattr(mod, function)
    return _functions[key]


def call_function(src: dict, samples: list, parts: list) -> tuple[list, str]:
    """A Python source on the batch, called as TRL calls a reward function: (its rewards, or None for each sample
    when it raised or answered out of shape, and why)."""
    try:
        fn = bundled_function(src["module"], src["function"])
        ids = [s.get("id") for s in samples]
        kwargs = dict(record_columns(ids, [event_reference(s) for s in samples],
                                     [s.get("metadata") if isinstance(s.get("metadata"), dict) else {}
                                      for s in samples]),
                      prompts=[p for p, _ in parts],
                      completions=[[{"role": "assistant", "content": r}] for _, r in parts],
                      completion_ids=None, trainer_state=StepState(), log_metric=lambda k, v: None,
                      log_extra=lambda k, v: None)
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
        out = asyncio.run(fn(**kwargs)) if is_async else fn(**kwargs)  # sync or async, as rlaif calls it
        return function_rewards(out, len(samples)), ""
    except Exception as e:  # the user's function: counted as this batch's failure, never raised into Bedrock's call
        return [None] * len(samples), f"{type(e).__name__}: {str(e)[:300]}"


def verifiable_reward(src: dict, sample: dict, response: str) -> tuple[float, str]:
    meta = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
    answer = event_reference(sample) if src["field"] == "reference_answer" else meta.get(src["field"])
    return verify(src["check"], response, answer, tolerance=src["tolerance"], pattern=src["pattern"],
                  json_key=src["json_key"])


def score_batch(samples: list) -> list[tuple[dict, str]]:
    """(the answer, a log line) for each sample: each source's reward, then their combination; a sample that a
    source could not score gets the neutral reward in place of one, marked reward_failed."""
    results: list = [None] * len(samples)
    valid = []
    for i, s in enumerate(samples):
        if completion_of(s) is None:
            results[i] = invalid_result(s)
        else:
            valid.append(i)
    batch = [samples[i] for i in valid]
    parts = [completion_of(s) for s in batch]
    values: dict[str, list] = {}
    whys: dict[str, list] = {}
    invalid: dict[int, tuple[dict, str]] = {}  # samples whose own criteria a judge refused, by place in the batch
    with concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        for src in SOURCES:
            name = src["name"]
            if src["kind"] == "judge":
                judge = JUDGES[name]
                answers = list(pool.map(lambda s: score_sample(s, judge, empty_is_zero=False), batch))
                for k, (a, why) in enumerate(answers):
                    if any(m["name"] == "invalid_sample" for m in a["metrics_list"]):
                        invalid.setdefault(k, (a, why))
                values[name] = [None if judge_failed(a) else a["aggregate_reward_score"] for a, _ in answers]
                whys[name] = [why for _, why in answers]
            elif src["kind"] == "verifiable":
                checked = [verifiable_reward(src, s, r) for s, (_, r) in zip(batch, parts)]
                values[name], whys[name] = [v for v, _ in checked], [w for _, w in checked]
            else:
                values[name], why = call_function(src, batch, parts) if batch else ([], "")
                whys[name] = [why] * len(batch)
    weights, essential = [s["weight"] for s in SOURCES], [s["essential"] for s in SOURCES]
    for k, i in enumerate(valid):
        if k in invalid:  # refused as rlaif refuses the line: 0, marked invalid_sample
            results[i] = invalid[k]
            continue
        own = [values[s["name"]][k] for s in SOURCES]
        reward, _ = compose(own, weights, essential)
        failed = reward is None
        answer = composed_result(samples[i].get("id"), NEUTRAL_REWARD if failed else reward,
                                 [(s["name"], v) for s, v in zip(SOURCES, own)], failed)
        said = "; ".join(f"{s['name']} {'failed' if v is None else f'{v:.3f}'} ({whys[s['name']][k][:200]})"
                         for s, v in zip(SOURCES, own))
        results[i] = answer, (f"no reward, neutral {NEUTRAL_REWARD}: " if failed else "") + said
    return results


def lambda_handler(event, context):
    """Bedrock's reward-Lambda contract: a list of samples in, one {id, aggregate_reward_score, metrics_list} each."""
    samples = event if isinstance(event, list) else [event]
    t0 = time.time()
    if CONFIG["composed"]:
        results = score_batch(samples)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            results = list(pool.map(score_sample, samples))
    out = [r for r, _ in results]
    failed = sum(any(m["name"] in ("judge_failed", "reward_failed") and m["value"] == 1.0 for m in r["metrics_list"])
                 for r in out)
    mean = sum(r["aggregate_reward_score"] for r in out) / max(1, len(out))
    log.info("scored %d samples in %.1fs: mean reward %.3f, %d failure(s) given %.2f",
             len(out), time.time() - t0, mean, failed, NEUTRAL_REWARD)
    if LOG_SAMPLES:  # asked for: each sample's reward, the reasons and the start of the response
        for s, (r, why) in zip(samples, results):
            log.info("sample %s: reward %.3f: %s; response: %.300r", r["id"], r["aggregate_reward_score"],
                     why[:500], _response_text(s))
    return out


def _response_text(sample) -> str:
    got = completion_of(sample)
    return got[1] if got is not None else ""
