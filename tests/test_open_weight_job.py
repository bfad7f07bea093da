"""`rlaif nova job-config --target open-weight`: the request Bedrock's OpenAI-compatible RFT takes for gpt-oss-20b
and Qwen3-32B, checked against the openai package's own request types; the printed program runs with the SDK
against a stand-in endpoint on 127.0.0.1 (what it uploads and what job it asks for); bad settings are refused
naming the key."""
import json
import subprocess
import sys
import threading
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError
from rlaif.nova.job_config import open_weight_config, open_weight_job

SMOKE = "recipes/smoke.yaml"


def _value_fits(value, annotation) -> bool:
    """Whether a JSON value fits a TypedDict field's annotation (Union, Literal, int, float, str)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Required, typing.NotRequired):
        return _value_fits(value, typing.get_args(annotation)[0])
    if origin is typing.Union:
        return any(_value_fits(value, a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation in (int, str):
        return isinstance(value, annotation) and not isinstance(value, bool)
    return True  # nested TypedDicts are checked one level down by the test


def _check(params: dict, typed_dict) -> None:
    hints = typing.get_type_hints(typed_dict, include_extras=True)
    unknown = set(params) - set(hints)
    assert not unknown, f"{typed_dict.__name__} has no {sorted(unknown)}"
    missing = set(typed_dict.__required_keys__) - set(params)
    assert not missing, f"{typed_dict.__name__} requires {sorted(missing)}"
    for key, value in params.items():
        assert _value_fits(value, hints[key]), f"{typed_dict.__name__}.{key} = {value!r} is not {hints[key]}"


def test_the_job_request_fits_the_openai_types_and_carries_the_lambda_grader():
    from openai.types.fine_tuning import job_create_params as jc
    from openai.types.fine_tuning.reinforcement_hyperparameters_param import ReinforcementHyperparametersParam
    from openai.types.fine_tuning.reinforcement_method_param import ReinforcementMethodParam
    r = load_recipe(SMOKE, ["nova.open_weight.base_model=qwen.qwen3-32b",
                            "nova.open_weight.hyperparameters.learning_rate_multiplier=0.5",
                            "nova.open_weight.hyperparameters.reasoning_effort=low"], check_files=False)
    job = open_weight_job(r, "file-abc")
    _check(job, jc.JobCreateParams)
    _check(job["method"], jc.Method)
    _check(job["method"]["reinforcement"], ReinforcementMethodParam)
    _check(job["method"]["reinforcement"]["hyperparameters"], ReinforcementHyperparametersParam)
    assert job["model"] == "qwen.qwen3-32b" and job["method"]["type"] == "reinforcement"
    assert job["method"]["reinforcement"]["hyperparameters"] == {
        "n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 0.5, "reasoning_effort": "low"}
    # Bedrock's grader: the SDK's types list none like it, so it is checked against Bedrock's documented shape
    assert job["method"]["reinforcement"]["grader"] == {
        "type": "lambda", "lambda": {"function": "arn:aws:lambda:us-west-2:<ACCOUNT_ID>:function:<REWARD_FUNCTION>"}}
    assert "suffix" not in job and "validation_file" not in job  # not supported / not documented by Bedrock
    cfg = open_weight_config(r)
    assert cfg["files_create"] == {"file": "artifacts/tiny/data/train.jsonl", "purpose": "fine-tune"}


@pytest.mark.parametrize("override, key", [
    ("nova.open_weight.hyperparameters.n_epochs=0", "n_epochs"),
    ("nova.open_weight.hyperparameters.learning_rate_multiplier=-1", "learning_rate_multiplier"),
    ("nova.open_weight.hyperparameters.epochs=2", "epochs"),
    ("nova.open_weight.hyperparameters.reasoning_effort=max", "reasoning_effort"),
])
def test_bad_hyperparameters_are_refused_naming_the_key(override, key):
    with pytest.raises(UserError, match=key):
        load_recipe(SMOKE, [override], check_files=False)


def test_a_model_bedrock_does_not_train_is_refused():
    r = load_recipe(SMOKE, ["nova.open_weight.base_model=meta.llama3-8b"], check_files=False)
    with pytest.raises(UserError, match="nova.open_weight.base_model 'meta.llama3-8b'"):
        open_weight_job(r)


class _Bedrock(BaseHTTPRequestHandler):
    """The two OpenAI-compatible routes the program calls; it records what it got."""
    seen: list = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/files":
            self.seen.append(("files", body))
            reply = {"id": "file-123", "object": "file", "bytes": len(body), "created_at": 0,
                     "filename": "train.jsonl", "purpose": "fine-tune", "status": "processed"}
        else:
            self.seen.append((self.path, json.loads(body)))
            reply = {"id": "ftjob-1", "object": "fine_tuning.job", "created_at": 0, "model": "openai.gpt-oss-20b",
                     "status": "validating_files", "training_file": "file-123"}
        out = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def test_the_printed_program_uploads_the_data_and_creates_the_job(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rlaif.cli", "nova", "job-config", SMOKE, "--target", "open-weight",
                        "--python"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    program = tmp_path / "create_job.py"
    program.write_text(r.stdout)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Bedrock)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Bedrock.seen = []
    try:
        env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}/v1", "OPENAI_API_KEY": "x",
               "PATH": "/usr/bin:/bin"}
        run = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=120, env=env,
                             cwd=".")
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "ftjob-1"
    (kind, upload), (path, job) = _Bedrock.seen
    assert kind == "files" and b'name="purpose"' in upload and b"fine-tune" in upload
    assert open("artifacts/tiny/data/train.jsonl", "rb").read() in upload  # the recipe's training data, whole
    load = load_recipe(SMOKE, check_files=False)
    assert path == "/v1/fine_tuning/jobs" and job == open_weight_job(load, "file-123")


def test_the_json_form_and_a_python_flag_without_the_target(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rlaif.cli", "nova", "job-config", SMOKE, "--target", "open-weight"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["jobs_create"]["model"] == "openai.gpt-oss-20b"
    r = subprocess.run([sys.executable, "-m", "rlaif.cli", "nova", "job-config", SMOKE, "--python"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--target open-weight" in r.stderr and "Traceback" not in r.stderr


def test_data_check_holds_each_target_to_its_own_rules(tmp_path):
    """Nova asks one user turn and no reference; open-weight asks a reference in every record and any turns."""
    rows = []
    for i in range(120):
        msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"}]
        if i % 10 == 0:  # a few-shot prompt: an example exchange before the question
            msgs[1:1] = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
        row = {"id": f"r{i}", "messages": msgs}
        if i % 20 != 5:
            row["reference_answer"] = {"answer": str(i)}
        rows.append(row)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    def check(*extra):
        return subprocess.run([sys.executable, "-m", "rlaif.cli", "data", "check", str(data), *extra],
                              capture_output=True, text=True, timeout=120)
    nova, open_weight = check(), check("--target", "open-weight")
    assert nova.returncode == 1 and open_weight.returncode == 1
    assert nova.stderr.count("single-turn") == 12 and "reference_answer" not in nova.stderr
    assert open_weight.stderr.count("expects a reference_answer") == 6 and "single-turn" not in open_weight.stderr
    assert f"{data}:6: reference_answer:" in open_weight.stderr  # file:line: field, as every check names it
    assert "114 valid record(s), 6 refused" in open_weight.stdout
