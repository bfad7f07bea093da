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
CRITERIA = [(c["name"], c["kind"]) for c in CONFIG["criteria"]]


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


def converse(system: str, user: str) -> str:
    """One judge call through Bedrock's Converse API; the reply's text. Raises JudgeError when it gives up."""
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

    req = {"modelId": _model_id(), "system": [{"text": system}],
           "messages": [{"role": "user", "content": [{"text": user}]}],
           "inferenceConfig": {"maxTokens": CONFIG["max_tokens"], "temperature": CONFIG["temperature"],
                               "topP": 1.0}}
    last = "no attempt made"
    for attempt in range(MAX_ATTEMPTS):
        if _use_schema[0]:
            req["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
                "name": "verdict", "schema": json.dumps(CONFIG["schema"])}}}}
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
FORMULA_TREE = parse(CONFIG["formula"], {n for n, _ in CRITERIA}) if CONFIG["aggregation"] == "formula" else None
WEIGHTS = [(c["name"], c["weight"], c["essential"]) for c in CONFIG["criteria"]]


# -- one sample -------------------------------------------------------------------------------------------------------
def score_sample(sample) -> tuple[dict, str]:
    """(the Lambda's answer for one sample, a log line). Never raises: a judge failure, or an error nobody foresaw
    (a malformed Converse reply, a bug), is the neutral reward for this sample, counted as judge_failed, since an
    exception would fail Bedrock's whole call."""
    try:
        return _score_sample(sample)
    except Exception as e:
        sample_id = sample.get("id") if isinstance(sample, dict) else None
        return lambda_result(sample_id, NEUTRAL_REWARD, reward_metrics({}, True, {})), \
            f"error ({type(e).__name__}: {e}): neutral {NEUTRAL_REWARD}"


def _score_sample(sample) -> tuple[dict, str]:
    sample_id = sample.get("id") if isinstance(sample, dict) else None
    msgs = sample.get("messages") if isinstance(sample, dict) else None
    if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict) \
            or msgs[-1].get("role") not in ("assistant", "nova_assistant"):
        # AWS's graders give 0 to a sample without a completion to judge
        return lambda_result(sample_id, 0.0, [{"name": "invalid_sample", "value": 1.0, "type": "Metric"}]), \
            "invalid sample: no messages ending with the assistant turn"
    prompt = [{"role": m.get("role"), "content": text_of(m.get("content")) or ""}
              for m in msgs[:-1] if isinstance(m, dict)]
    response = text_of(msgs[-1].get("content")) or ""
    names = [n for n, _ in CRITERIA]
    if not response.strip():
        return empty_result(sample_id, names), "empty response: 0"
    gates_ok, check_scores, details = run_checks(CHECKS, response, user_text(prompt))
    if CONFIG["per_item"]:
        items, why = json_items(response, CONFIG["per_item"])
        check_scores["per_item_json"], details["per_item_json"] = float(items is not None), why
        gates_ok = gates_ok and items is not None
    if not gates_ok:
        failing = ", ".join(k for k, v in check_scores.items() if v == 0.0)
        return lambda_result(sample_id, 0.0, reward_metrics({}, False, check_scores)), \
            f"gated by {failing}: 0 without the judge"
    texts = [response] if not CONFIG["per_item"] else [json.dumps(item, ensure_ascii=False) for item in items]
    ref = reference_text(event_reference(sample)) if CONFIG["uses_reference"] else None
    got = {n: [] for n in names}
    rationales = []
    try:
        for text in texts:
            block, _ = sample_block(prompt, text, ref)
            scores, rationale = scores_from_text(converse(CONFIG["system"], block), CRITERIA,
                                                 CONFIG["pass_label"], CONFIG["fail_label"])
            for n in names:
                got[n].append(scores[n])
            rationales.append(rationale)
    except (JudgeError, ParseError) as e:
        return lambda_result(sample_id, NEUTRAL_REWARD, reward_metrics({}, True, check_scores)), \
            f"judge failed ({e}): neutral {NEUTRAL_REWARD}"
    scores = {n: math.fsum(v) / len(v) for n, v in got.items()}  # as statistics.fmean in rlaif
    reward = combine(aggregate_scores(scores, WEIGHTS, CONFIG["aggregation"], FORMULA_TREE), CHECKS, check_scores,
                     CONFIG["judge_weight"])
    return lambda_result(sample_id, reward, reward_metrics(scores, False, check_scores)), " ".join(rationales)


def lambda_handler(event, context):
    """Bedrock's reward-Lambda contract: a list of samples in, one {id, aggregate_reward_score, metrics_list} each."""
    samples = event if isinstance(event, list) else [event]
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        results = list(pool.map(score_sample, samples))
    out = [r for r, _ in results]
    failed = sum(any(m["name"] == "judge_failed" and m["value"] == 1.0 for m in r["metrics_list"]) for r in out)
    mean = sum(r["aggregate_reward_score"] for r in out) / max(1, len(out))
    log.info("scored %d samples in %.1fs: mean reward %.3f, %d judge failure(s) given %.2f",
             len(out), time.time() - t0, mean, failed, NEUTRAL_REWARD)
    if LOG_SAMPLES:  # asked for: each sample's reward, the judge's reason and the start of the response
        for s, (r, why) in zip(samples, results):
            log.info("sample %s: reward %.3f: %s; response: %.300r", r["id"], r["aggregate_reward_score"],
                     why[:500], _response_text(s))
    return out


def _response_text(sample) -> str:
    msgs = sample.get("messages") if isinstance(sample, dict) else None
    last = msgs[-1] if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) else {}
    return text_of(last.get("content")) or ""
