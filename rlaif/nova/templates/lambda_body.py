# The body of the reward Lambda that `rlaif nova export-lambda` writes. It is not imported by rlaif: the
# exporter puts CONFIG and the functions it shares with rlaif (sample_block, scores_from_text, aggregate_scores,
# run_checks, combine, json_items, text_of) above it, so that the Lambda and rlaif judge a sample the same way.
# Standard library and boto3 only, as the Lambda runtime provides.

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


# -- deterministic checks (the recipe's `checks:`), standard-library versions of rlaif/checks.py ---------------------
_SCHEMA_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _schema_errors(obj, schema, where="(root)"):
    """The first error of `obj` against the JSON Schema subset the exporter accepts, or None."""
    types = schema.get("type")
    if types is not None:
        ok = False
        for t in ([types] if isinstance(types, str) else types):
            if t == "integer":
                ok = ok or (isinstance(obj, int) and not isinstance(obj, bool))
            elif t == "number":
                ok = ok or (isinstance(obj, (int, float)) and not isinstance(obj, bool))
            else:
                ok = ok or isinstance(obj, _SCHEMA_TYPES[t])
        if not ok:
            return f"{where}: not of type {types}"
    if "enum" in schema and obj not in schema["enum"]:
        return f"{where}: not one of {schema['enum']}"
    if "const" in schema and obj != schema["const"]:
        return f"{where}: not {schema['const']!r}"
    if isinstance(obj, str):
        if len(obj) < schema.get("minLength", 0) or len(obj) > schema.get("maxLength", float("inf")):
            return f"{where}: length out of bounds"
        if "pattern" in schema and not re.search(schema["pattern"], obj):
            return f"{where}: does not match {schema['pattern']}"
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if obj < schema.get("minimum", float("-inf")) or obj > schema.get("maximum", float("inf")):
            return f"{where}: out of range"
    if isinstance(obj, list):
        if len(obj) < schema.get("minItems", 0) or len(obj) > schema.get("maxItems", float("inf")):
            return f"{where}: wrong number of items"
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(obj):
                err = _schema_errors(item, schema["items"], f"{where}/{i}")
                if err:
                    return err
    if isinstance(obj, dict):
        for key in schema.get("required", []):
            if key not in obj:
                return f"{where}: '{key}' is a required property"
        props = schema.get("properties", {})
        for key, value in obj.items():
            if key in props:
                err = _schema_errors(value, props[key], f"{where}/{key}")
            elif schema.get("additionalProperties") is False:
                err = f"{where}: additional property '{key}'"
            elif isinstance(schema.get("additionalProperties"), dict):
                err = _schema_errors(value, schema["additionalProperties"], f"{where}/{key}")
            else:
                err = None
            if err:
                return err
    return None


class Check:
    def __init__(self, spec: dict):
        self.spec, self.kind = spec, spec["kind"]
        self.label = spec.get("name") or spec["kind"]
        self.mode = spec.get("mode", "gate")
        self.weight = float(spec.get("weight", 1.0))
        if self.kind in ("regex_must", "regex_must_not"):
            self.rx = re.compile(spec["pattern"])
        elif self.kind == "blocklist":
            flags = 0 if spec.get("case_sensitive") else re.IGNORECASE
            self.rx = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in spec["words"]) + r")\b", flags)

    def run(self, text: str, prompt: str = ""):
        if self.kind in ("json_valid", "json_schema"):
            try:
                obj = json.loads(_strip_code_fence(text))
            except json.JSONDecodeError as e:
                return False, f"not JSON: {e.msg}"
            if self.kind == "json_valid":
                return True, "valid JSON"
            err = _schema_errors(obj, self.spec["schema"])
            return (False, err) if err else (True, "matches the schema")
        if self.kind == "length":
            n, w = len(text), len(text.split())
            for key, value, ok in (("min_chars", n, lambda b, v: v >= b), ("max_chars", n, lambda b, v: v <= b),
                                   ("min_words", w, lambda b, v: v >= b), ("max_words", w, lambda b, v: v <= b)):
                bound = self.spec.get(key)
                if bound is not None and not ok(bound, value):
                    return False, f"{key} {bound}: got {value}"
            return True, f"{n} characters, {w} words"
        if self.kind == "regex_must":
            return (True, "pattern found") if self.rx.search(text) else (False, "pattern missing")
        if self.kind in ("regex_must_not", "blocklist"):
            return (False, "forbidden text found") if self.rx.search(text) else (True, "not found")
        raise JudgeError(f"check kind {self.kind!r} is not supported in the Lambda")


CHECKS = [Check(c) for c in CONFIG["checks"]]
FORMULA_TREE = parse(CONFIG["formula"], {n for n, _ in CRITERIA}) if CONFIG["aggregation"] == "formula" else None
WEIGHTS = [(c["name"], c["weight"], c["essential"]) for c in CONFIG["criteria"]]


# -- one sample -------------------------------------------------------------------------------------------------------
def _result(sample_id, score: float, metrics: list) -> dict:
    return {"id": sample_id, "aggregate_reward_score": round(float(score), 6), "metrics_list": metrics}


def _reference(sample: dict):
    meta = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
    ref = meta.get("reference_answer", sample.get("reference_answer"))
    return ref if ref is None or isinstance(ref, str) else json.dumps(ref, ensure_ascii=False)


def score_sample(sample) -> tuple[dict, str]:
    """(the Lambda's answer for one sample, a log line). Never raises: a failure is the neutral reward."""
    sample_id = sample.get("id") if isinstance(sample, dict) else None
    msgs = sample.get("messages") if isinstance(sample, dict) else None
    if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict) \
            or msgs[-1].get("role") not in ("assistant", "nova_assistant"):
        # AWS's graders give 0 to a sample without a completion to judge
        return _result(sample_id, 0.0, [{"name": "invalid_sample", "value": 1.0, "type": "Metric"}]), \
            "invalid sample: no messages ending with the assistant turn"
    prompt = [{"role": m.get("role"), "content": text_of(m.get("content")) or ""}
              for m in msgs[:-1] if isinstance(m, dict)]
    response = text_of(msgs[-1].get("content")) or ""
    names = [n for n, _ in CRITERIA]
    if not response.strip():
        return _result(sample_id, 0.0, [{"name": n, "value": 0.0, "type": "Reward"} for n in names]
                       + [{"name": "empty_response", "value": 1.0, "type": "Metric"}]), "empty response: 0"
    user = "\n".join(m["content"] for m in prompt if m["role"] == "user")
    gates_ok, check_scores, details = run_checks(CHECKS, response, user)
    if CONFIG["per_item"]:
        items, why = json_items(response, CONFIG["per_item"])
        check_scores["per_item_json"], details["per_item_json"] = float(items is not None), why
        gates_ok = gates_ok and items is not None
    check_metrics = [{"name": f"check_{k}", "value": v, "type": "Metric"} for k, v in check_scores.items()]
    if not gates_ok:
        failing = ", ".join(k for k, v in check_scores.items() if v == 0.0)
        return _result(sample_id, 0.0, [{"name": "judge_failed", "value": 0.0, "type": "Metric"}] + check_metrics), \
            f"gated by {failing}: 0 without the judge"
    texts = [response] if not CONFIG["per_item"] else [json.dumps(item, ensure_ascii=False) for item in items]
    ref = _reference(sample) if CONFIG["uses_reference"] else None
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
        return _result(sample_id, NEUTRAL_REWARD, [{"name": "judge_failed", "value": 1.0, "type": "Metric"}]
                       + check_metrics), f"judge failed ({e}): neutral {NEUTRAL_REWARD}"
    scores = {n: math.fsum(v) / len(v) for n, v in got.items()}  # as statistics.fmean in rlaif
    reward = combine(aggregate_scores(scores, WEIGHTS, CONFIG["aggregation"], FORMULA_TREE), CHECKS, check_scores,
                     CONFIG["judge_weight"])
    metrics = [{"name": n, "value": round(scores[n], 6), "type": "Reward"} for n in names]
    metrics += [{"name": "judge_failed", "value": 0.0, "type": "Metric"}] + check_metrics
    return _result(sample_id, reward, metrics), " ".join(rationales)


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
