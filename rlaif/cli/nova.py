"""`rlaif nova export-lambda|gateway|job-config|parity`: the Bedrock bridge."""
from __future__ import annotations

import contextlib
import json
import os
import sys

from rlaif.common.console import table_console
from rlaif.config.nova import grpo_settings
from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError
from rlaif.eval.nova_parity import needs_judge, parity
from rlaif.factory import judge_endpoint
from rlaif.nova.export import export_lambda
from rlaif.nova.gateway import Gateway, build_app, check_bind
from rlaif.nova.job_config import job_config, open_weight_config, open_weight_snippet


def add_parser(sub) -> None:
    np_ = sub.add_parser("nova", help="the Bedrock bridge: export a reward Lambda, a local Converse gateway, "
                         "the Bedrock job configuration, reward parity with the Lambda")
    nsub = np_.add_subparsers(dest="nova_command", required=True, metavar="NOVA_COMMAND")
    xp = nsub.add_parser("export-lambda", help="write the recipe's reward as a Bedrock reward Lambda",
                         description="Write DIR/lambda_function.py (standard library and boto3 only) and "
                                     "DIR/README.md (deployment). The Lambda computes the recipe's reward: its "
                                     "judge (rubric, checks, a record's own criteria) through Bedrock's Converse API "
                                     "(model id from JUDGE_MODEL_ID) in verdict mode, and for a recipe's rewards: its "
                                     "verifiable rules and its Python functions whose module is one standard-library "
                                     "file, combined as in training. What it cannot carry (a Lambda source, a judge "
                                     "model of a source's own, a module with other imports) is refused by name.")
    xp.add_argument("recipe")
    xp.add_argument("--out", required=True, help="folder to write into")
    xp.add_argument("--model-id", help="default judge model id baked into the file (JUDGE_MODEL_ID overrides it)")
    xp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    xp.set_defaults(fn=cmd_export_lambda)
    gp = nsub.add_parser("gateway", help="serve Bedrock-runtime Converse on 127.0.0.1, backed by the open judge",
                         description="Serve POST /model/{modelId}/converse backed by the recipe's judge (started "
                                     "for you unless the recipe gives judge.base_url). Prints the URL; point boto3 "
                                     "at it with AWS_ENDPOINT_URL_BEDROCK_RUNTIME.")
    gp.add_argument("--judge", required=True, metavar="RECIPE", help="recipe whose judge answers")
    gp.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    gp.add_argument("--host", default="127.0.0.1", help="address to bind; other than loopback needs a key")
    gp.add_argument("--api-key", help="require this key (bearer token, or the SigV4 access key id). Prefer "
                                      "$RLAIF_GATEWAY_API_KEY: a command line is readable by every local user")
    gp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    gp.set_defaults(fn=cmd_gateway)
    jp_ = nsub.add_parser("job-config", help="print the Bedrock RFT job configuration for the recipe's run",
                          description="Print the CreateModelCustomizationJob request (REINFORCEMENT_FINE_TUNING) "
                                      "with the recipe's nova.hyperparameters; ARNs and S3 locations are "
                                      "placeholders unless the recipe's nova block gives them.")
    jp_.add_argument("recipe")
    jp_.add_argument("--target", choices=["nova", "open-weight"], default="nova",
                     help="nova: CreateModelCustomizationJob (default); open-weight: the Files API upload and "
                          "fine_tuning.jobs.create of Bedrock's OpenAI-compatible RFT (gpt-oss-20b, Qwen3-32B), "
                          "from the recipe's nova.open_weight block")
    jp_.add_argument("--python", action="store_true", help="with --target open-weight: print a runnable openai-SDK "
                     "program instead of JSON")
    jp_.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    jp_.set_defaults(fn=cmd_job_config)
    pp = nsub.add_parser("parity", help="score samples with the exported reward Lambda and with rlaif's own reward, "
                         "and print how well they agree",
                         description="Export the recipe's reward Lambda, run it unchanged on the samples (its boto3 "
                                     "calls reach the recipe's judge through the local Converse gateway), score the "
                                     "same samples with rlaif's own reward (`rlaif reward score` for a recipe's "
                                     "rewards:, `rlaif judge score` for the judge alone), and print the agreement over "
                                     "the samples both sides scored: mean and largest absolute difference, identical "
                                     "rewards, Spearman's rank correlation, verdicts flipped per criterion (per "
                                     "source, for rewards:; a pass is a score above 0.5). Verdict mode on both sides "
                                     "gives identical rewards. Exit 1 when a sample is missing on either side.")
    pp.add_argument("recipe")
    pp.add_argument("--samples", required=True,
                    help="reward-Lambda event samples, JSONL (as `rlaif judge score` reads)")
    pp.add_argument("--out", help="folder for lambda.jsonl, rlaif.jsonl, parity.jsonl, parity.json "
                                  "(default: the recipe's run folder /parity)")
    pp.add_argument("--max-mean-abs-diff", type=float, metavar="D",
                    help="exit 1 when the mean absolute reward difference is above D (for CI)")
    pp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    pp.set_defaults(fn=cmd_parity)


def cmd_export_lambda(a) -> int:
    r = load_recipe(a.recipe, a.overrides, check_files=False)
    path, notes = export_lambda(r, a.out, model_id=a.model_id)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(path)
    print(f"deployment notes: {path.parent / 'README.md'}", file=sys.stderr)
    return 0


def cmd_gateway(a) -> int:
    api_key = a.api_key or os.environ.get("RLAIF_GATEWAY_API_KEY")
    check_bind(a.host, api_key)  # before a judge server is started for nothing
    r = load_recipe(a.judge, a.overrides)
    with judge_endpoint(r, r.run_dir) as ep:
        gw = Gateway(build_app(ep.url, r.judge.name, api_key=api_key, judge_api_key=r.judge.api_key,
                               timeout_s=r.judge.timeout_s), a.host, a.port, api_key)
        print(gw.url, flush=True)
        print(f"Bedrock Converse for judge '{r.judge.name}' at {gw.url}; point boto3 at it with\n"
              f"  export AWS_ENDPOINT_URL_BEDROCK_RUNTIME={gw.url} AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x "
              f"AWS_DEFAULT_REGION=us-east-1\nCtrl-C stops it", file=sys.stderr, flush=True)
        gw.serve()
    return 0


def cmd_parity(a) -> int:
    r = load_recipe(a.recipe, a.overrides)
    out = a.out or str(r.run_dir / "parity")
    # a reward of rules and functions asks no judge: none is started
    with judge_endpoint(r, r.run_dir) if needs_judge(r) else contextlib.nullcontext() as ep:
        url = None if ep is None else ep.url if isinstance(ep.url, str) else ep.url[0]
        res = parity(r, url, a.samples, out)
    for n in res["notes"]:  # (the samples file's problems were printed as it was read)
        print(f"note: {n}", file=sys.stderr)
    print_parity(res)
    print(f"per sample: {out}/parity.jsonl; summary: {out}/parity.json", file=sys.stderr)
    failed = False
    for side, key in (("the Lambda", "missing_in_lambda"), ("rlaif", "missing_in_rlaif")):
        if res[key]:  # a sample one side leaves out is a parity failure, whatever the others say
            print(f"error: {side} answered no valid result for {len(res[key])} sample(s), e.g. {res[key][0]!r}",
                  file=sys.stderr)
            failed = True
    if a.max_mean_abs_diff is not None:
        if res["mean_abs_diff"] is None:
            print("error: no sample was scored by both sides without a failure: nothing to compare",
                  file=sys.stderr)
            failed = True
        elif res["mean_abs_diff"] > a.max_mean_abs_diff:
            print(f"error: mean absolute difference {res['mean_abs_diff']} is above {a.max_mean_abs_diff}",
                  file=sys.stderr)
            failed = True
    return 1 if failed else 0


def print_parity(res: dict) -> None:
    from rich.table import Table

    rho = "n/a (one side constant)" if res["spearman"] is None else f"{res['spearman']:.3f}"
    judge = f"judge {res['judge']}" if res["judge"] else "no judge"
    what = " of the recipe's rewards" if res.get("rewards") == "rewards:" else ""
    t = Table(title=f"reward parity{what}: the exported Lambda ({res['lambda_mode']}) vs rlaif ({res['rlaif_mode']}), "
                    f"{judge}, {res['samples']} samples")
    t.add_column("measure")
    t.add_column("value", justify="right")
    def num(x):
        return "n/a" if x is None else f"{x:.4f}"
    t.add_row("missing in the Lambda / in rlaif", f"{len(res['missing_in_lambda'])} / {len(res['missing_in_rlaif'])}")
    t.add_row("compared (no failure on either side)", f"{res['compared']} / {res['samples']}")
    t.add_row("mean |Lambda - rlaif|", num(res["mean_abs_diff"]))
    t.add_row("max |Lambda - rlaif|", num(res["max_abs_diff"]))
    t.add_row("identical rewards", f"{res['identical']} / {res['compared']}")
    t.add_row("Spearman rank correlation", rho)
    t.add_row("failures (Lambda / rlaif)", f"{res['judge_failed']['lambda']} / {res['judge_failed']['rlaif']}")
    for c, f in res["flips"].items():
        t.add_row(f"flips: {c}", f"{f['pass_in_lambda_only'] + f['pass_in_rlaif_only']} of {f['judged_by_both']} "
                                 f"({f['pass_in_lambda_only']} pass in the Lambda only, "
                                 f"{f['pass_in_rlaif_only']} in rlaif only)")
    table_console().print(t)


def cmd_job_config(a) -> int:
    r = load_recipe(a.recipe, a.overrides, check_files=False)
    if a.target == "open-weight":
        print(open_weight_snippet(r) if a.python else json.dumps(open_weight_config(r), indent=2))
        print("# the reward Lambda: `rlaif nova export-lambda` (the same event and response as Nova's); the data: "
              "`rlaif data check FILE --target open-weight`", file=sys.stderr)
        return 0
    if a.python:
        raise UserError("--python prints the open-weight job's program: add --target open-weight")
    print(json.dumps(job_config(r), indent=2))
    _, rows = grpo_settings(r.nova.hyperparameters, r.grpo, has_eval=bool(r.data.eval), source=r.source)
    for bedrock, key, value in rows:
        print(f"# {bedrock} -> local {key} = {value}", file=sys.stderr)
    return 0
