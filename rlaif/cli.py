"""The `rlaif` command line. Every subcommand explains itself with --help, exits 0 on success and 1 on bad
input with a message naming the file, line and field (never a traceback for a user error)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from rlaif.errors import UserError


def run_guarded(fn) -> int:
    """Run a command: user errors become one clear message and exit 1; Ctrl-C and SIGTERM exit cleanly."""
    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)  # finally-blocks (judge server shutdown) run on `kill` too
    logging.basicConfig(level=os.environ.get("RLAIF_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return fn() or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopped cleanly (judge server and child processes are gone)", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or a failed dependency: say what and where to look, keep the trace for -v
        from rlaif.judge.reward import JudgeUnavailable
        from rlaif.judge.server import JudgeServerError
        if isinstance(e, (JudgeUnavailable, JudgeServerError)):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise


def _cmd_judge_serve(a) -> int:
    import time

    from rlaif.judge.server import VLLMServer
    from rlaif.recipe import load_recipe

    r = load_recipe(a.recipe, a.overrides)
    server = VLLMServer.for_judge(r.judge, r.run_dir / "judge_server.log", port=a.port)
    with server:
        print(server.base_url, flush=True)
        print(f"serving '{r.judge.name}'; use --set judge.base_url={server.base_url}; Ctrl-C stops it",
              file=sys.stderr, flush=True)
        while server.proc and server.proc.poll() is None:
            time.sleep(1)
        if server.proc is not None:
            print(f"error: the judge server exited with code {server.proc.returncode}", file=sys.stderr)
            return 1
    return 0


def _cmd_judge_score(a) -> int:
    from rlaif.judge.score import score_file
    from rlaif.recipe import load_recipe
    from rlaif.train import judge_endpoint

    r = load_recipe(a.recipe, a.overrides)
    with judge_endpoint(r, r.run_dir) as ep:
        res = score_file(r, ep.url, a.input, a.output)
    print(f"{a.output}: {res['written']} verdict(s) ({res['empty']} empty responses scored 0, "
          f"{res['judge_failures']} judge failure(s) given the neutral reward); {res['refused']} input line(s) "
          f"refused", file=sys.stderr)
    return 1 if a.strict and res["problems"] else 0


def _cmd_judge_audit(a) -> int:
    from rlaif.audit_cli import cmd_judge_audit
    return cmd_judge_audit(a)


def _cmd_eval(a) -> int:
    from rlaif.policy_eval import cmd_eval
    return cmd_eval(a)


def _cmd_data_check(a) -> int:
    from rlaif.data import bedrock_problems, parse_columns, prompt_tokens, read_records

    res = read_records(a.file, parse_columns(a.columns))
    problems = list(res.problems)
    if not a.local:
        problems += bedrock_problems(a.file, list(zip(res.record_lines, res.records)))
    for p in sorted(problems, key=lambda p: p.line):
        print(f"error: {p}", file=sys.stderr)
    bad_lines = len({p.line for p in problems})
    valid = len(res.records) - len({p.line for p in problems} & set(res.record_lines))
    notes = []
    # prompts over the maximum length: Bedrock leaves them out of training; so does rlaif
    max_len, tok, how = a.max_prompt_length, None, "tokens"
    if a.recipe:
        from rlaif.recipe import load_recipe
        r = load_recipe(a.recipe, check_files=False)
        max_len = max_len or r.nova.hyperparameters.maxPromptLength
        a.tokenizer = a.tokenizer or r.policy.model
    if max_len:
        if a.tokenizer:
            from transformers import AutoTokenizer
            try:
                tok = AutoTokenizer.from_pretrained(a.tokenizer)
            except Exception as e:
                raise UserError(f"--tokenizer {a.tokenizer}: cannot load: {type(e).__name__}: {e}") from None
        else:
            how = "tokens, estimated at 4 characters a token (give --tokenizer for exact counts)"
        long = []
        for n, rec in zip(res.record_lines, res.records):
            size = (prompt_tokens(tok, rec["prompt"]) if tok is not None
                    else sum(len(m["content"]) for m in rec["prompt"]) // 4)
            if size > max_len:
                long.append((n, size))
        for n, size in long[:20]:
            print(f"warning: {a.file}:{n}: messages: prompt of {size} tokens is over maxPromptLength {max_len}; "
                  "Bedrock leaves it out of training", file=sys.stderr)
        if len(long) > 20:
            print(f"warning: ... and {len(long) - 20} more prompt(s) over maxPromptLength", file=sys.stderr)
        notes.append(f"{len(long)} prompt(s) over maxPromptLength {max_len} ({how})")
    size_ok = True
    if not a.local and not 100 <= valid <= 20000:
        size_ok = False
        print(f"error: {a.file}: a Bedrock RFT job takes 100 to 20,000 training records; this file has {valid} "
              "valid (use --local to check a file for local training only)", file=sys.stderr)
    print(f"{a.file}: {valid} valid record(s), {bad_lines} refused, {res.lines} non-empty line(s)"
          + "".join(f"; {n}" for n in notes))
    return 1 if problems or not size_ok or not valid else 0


def _cmd_nova_export(a) -> int:
    from rlaif.nova.export import export_lambda
    from rlaif.recipe import load_recipe

    r = load_recipe(a.recipe, a.overrides, check_files=False)
    path, notes = export_lambda(r, a.out, model_id=a.model_id)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(path)
    print(f"deployment notes: {path.parent / 'README.md'}", file=sys.stderr)
    return 0


def _cmd_nova_gateway(a) -> int:
    from rlaif.nova.gateway import Gateway, build_app, check_bind
    from rlaif.recipe import load_recipe
    from rlaif.train import judge_endpoint

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


def _cmd_nova_job_config(a) -> int:
    import json

    from rlaif.nova.hyperparams import grpo_settings, job_config
    from rlaif.recipe import load_recipe

    r = load_recipe(a.recipe, a.overrides, check_files=False)
    print(json.dumps(job_config(r), indent=2))
    _, rows = grpo_settings(r.nova.hyperparameters, r.grpo, has_eval=bool(r.data.eval), source=r.source)
    for bedrock, key, value in rows:
        print(f"# {bedrock} -> local {key} = {value}", file=sys.stderr)
    return 0


def _cmd_smoke(a) -> int:
    from rlaif.smoke import run_smoke
    return run_smoke(a.recipe, a.overrides)


def build_parser() -> argparse.ArgumentParser:
    from rlaif.train import build_parser as train_parser

    ap = argparse.ArgumentParser(prog="rlaif", description="RLAIF with an open judge: GRPO + LoRA policies "
                                 "scored by a vLLM-served rubric judge, Nova RFT compatible.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tp = sub.add_parser("train", help="GRPO + LoRA training against the recipe's judge",
                        description="Train the recipe's policy with GRPO + LoRA; the judge server is started and "
                                    "stopped for you unless the recipe gives judge.base_url.")
    train_parser(tp)
    tp.set_defaults(fn=lambda a: __import__("rlaif.train", fromlist=["cmd_train"]).cmd_train(a))

    jp = sub.add_parser("judge", help="the judge server and judge tools")
    jsub = jp.add_subparsers(dest="judge_command", required=True, metavar="JUDGE_COMMAND")
    sp = jsub.add_parser("serve", help="start the recipe's vLLM judge server in the foreground; print its URL",
                         description="Start the recipe's judge model under vLLM on 127.0.0.1 and print its base "
                                     "URL; Ctrl-C stops it and every child process.")
    sp.add_argument("recipe")
    sp.add_argument("--port", type=int, help="port to use (default: the recipe's, else a free one)")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sp.set_defaults(fn=_cmd_judge_serve)

    sc = jsub.add_parser("score", help="score Nova reward-Lambda samples with the recipe's rubric and judge",
                         description="Read Nova reward-Lambda event samples (one JSON object per line: id, messages "
                                     "ending with the assistant turn, metadata and/or reference_answer) and write one "
                                     "Nova reward-Lambda response per valid sample (id, aggregate_reward_score, "
                                     "metrics_list, rationale). Malformed lines are reported with their line number "
                                     "and skipped; --strict makes them exit 1. Starts the judge server if the recipe "
                                     "says so.")
    sc.add_argument("recipe")
    sc.add_argument("--input", required=True, help="Nova Lambda-event samples, JSONL")
    sc.add_argument("--output", required=True, help="where to write the Lambda responses, JSONL")
    sc.add_argument("--strict", action="store_true", help="exit 1 if any input line was refused")
    sc.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sc.set_defaults(fn=_cmd_judge_score)

    ep = sub.add_parser("eval", help="sample the policy on held-out prompts and score it with the judge",
                        description="Sample completions (recipe's eval block) for held-out prompts from the base "
                                    "policy and base + adapter, and report judge pass rates (overall, per criterion, "
                                    "best-of-k), check pass rates, the adapter's win rate against the base, and, "
                                    "when the recipe has eval.truth_regex or eval.second_judge, the second "
                                    "opinion's pass rates and the judge's agreement with it.")
    ep.add_argument("recipe")
    ep.add_argument("--adapter", help="LoRA adapter folder (e.g. runs/NAME/adapter): evaluated beside the base "
                    "policy, with the adapter's win rate against it; default: the base policy alone")
    ep.add_argument("--adapter-only", action="store_true", help="with --adapter: skip the base policy")
    ep.add_argument("--dataset", help="Nova RFT JSONL of prompts (default: the recipe's data.eval)")
    ep.add_argument("--output", help="write the metrics as JSON here")
    ep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ep.set_defaults(fn=_cmd_eval)

    from rlaif.audit_cli import add_audit_parser
    add_audit_parser(jsub).set_defaults(fn=_cmd_judge_audit)

    dp = sub.add_parser("data", help="dataset tools")
    dsub = dp.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    cp = dsub.add_parser("check", help="validate a Nova RFT JSONL dataset",
                         description="Validate a Nova RFT dataset; print one line per problem "
                                     "(file:line: field: message) and exit 1 if there is any.")
    cp.add_argument("file", help="Nova RFT JSONL, or a Parquet/JSON/CSV table with --columns")
    cp.add_argument("--columns", help="for tables: field=column pairs, e.g. prompt=question,reference_answer=answer")
    cp.add_argument("--max-prompt-length", type=int, help="count prompts longer than this (tokens); default: the "
                    "recipe's nova.hyperparameters.maxPromptLength")
    cp.add_argument("--tokenizer", help="tokenizer for prompt lengths (default: the recipe's policy)")
    cp.add_argument("--recipe", help="take maxPromptLength and the tokenizer from this recipe")
    cp.add_argument("--local", action="store_true", help="only the rules for local training (multi-turn prompts "
                    "and fewer than 100 records allowed)")
    cp.set_defaults(fn=_cmd_data_check)

    np_ = sub.add_parser("nova", help="the Bedrock bridge: export a reward Lambda, a local Converse gateway, "
                         "the Bedrock job configuration")
    nsub = np_.add_subparsers(dest="nova_command", required=True, metavar="NOVA_COMMAND")
    xp = nsub.add_parser("export-lambda", help="write the recipe's rubric and checks as a Bedrock reward Lambda",
                         description="Write DIR/lambda_function.py (standard library and boto3 only) and "
                                     "DIR/README.md (deployment). The Lambda judges through Bedrock's Converse API "
                                     "(model id from JUDGE_MODEL_ID) in verdict mode.")
    xp.add_argument("recipe")
    xp.add_argument("--out", required=True, help="folder to write into")
    xp.add_argument("--model-id", help="default judge model id baked into the file (JUDGE_MODEL_ID overrides it)")
    xp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    xp.set_defaults(fn=_cmd_nova_export)
    gp = nsub.add_parser("gateway", help="serve Bedrock-runtime Converse on 127.0.0.1, backed by the open judge",
                         description="Serve POST /model/{modelId}/converse backed by the recipe's judge (started "
                                     "for you unless the recipe gives judge.base_url). Prints the URL; point boto3 "
                                     "at it with AWS_ENDPOINT_URL_BEDROCK_RUNTIME.")
    gp.add_argument("--judge", required=True, metavar="RECIPE", help="recipe whose judge answers")
    gp.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    gp.add_argument("--host", default="127.0.0.1", help="address to bind; other than loopback needs --api-key")
    gp.add_argument("--api-key", help="require this key (bearer token, or the SigV4 access key id)")
    gp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    gp.set_defaults(fn=_cmd_nova_gateway)
    jp_ = nsub.add_parser("job-config", help="print the Bedrock RFT job configuration for the recipe's run",
                          description="Print the CreateModelCustomizationJob request (REINFORCEMENT_FINE_TUNING) "
                                      "with the recipe's nova.hyperparameters; ARNs and S3 locations are "
                                      "placeholders unless the recipe's nova block gives them.")
    jp_.add_argument("recipe")
    jp_.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    jp_.set_defaults(fn=_cmd_nova_job_config)

    from rlaif.report import add_report_parser
    add_report_parser(sub)

    mp = sub.add_parser("smoke", help="the end-to-end CPU smoke run (what `make smoke-test` runs)")
    mp.add_argument("recipe", nargs="?", default="recipes/smoke.yaml")
    mp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    mp.set_defaults(fn=_cmd_smoke)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    return run_guarded(lambda: a.fn(a))


if __name__ == "__main__":
    sys.exit(main())
