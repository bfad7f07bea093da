"""Security: loopback by default, no exposure without a key, and API keys that reach the judge end to end."""

import httpx
import pytest

from rlaif.errors import UserError


def test_the_judge_server_binds_elsewhere_only_with_a_key(tiny):
    from rlaif.judge.server import VLLMServer
    with pytest.raises(UserError, match="would expose the judge beyond this machine"):
        VLLMServer("artifacts/tiny/judge", "judge", host="0.0.0.0")
    assert VLLMServer("artifacts/tiny/judge", "judge").host == "127.0.0.1"
    VLLMServer("artifacts/tiny/judge", "judge", host="0.0.0.0", api_key="k")  # deliberate, with a key


def test_recipes_default_to_loopback():
    from rlaif.config.recipe import load_recipe
    r = load_recipe("recipes/smoke.yaml", check_files=False)
    assert r.judge.serve.host == "127.0.0.1"


@pytest.mark.integration
def test_an_api_key_travels_from_the_recipe_to_the_judge(tiny, tmp_path):
    """With judge.api_key, vLLM is started with it, refuses requests without it, and rlaif's reward sends it."""
    from rlaif.config.recipe import load_recipe
    from rlaif.data.samples import Sample
    from rlaif.factory import make_judge
    from rlaif.judge.server import VLLMServer

    r = load_recipe("recipes/smoke.yaml", ["judge.api_key=test-key-123"])
    with VLLMServer.for_judge(r.judge, tmp_path / "judge.log") as server:
        url = server.base_url
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer test-key-123"}).status_code == 200
        reward = make_judge(r, url)
        reward.self_test_sync()
        v = reward.score_sync([Sample("s", [{"role": "user", "content": "say hi"}], "hi please")])
        assert not v[0].failed and v[0].reward is not None
        wrong = load_recipe("recipes/smoke.yaml", ["judge.api_key=wrong"])
        bad = make_judge(wrong, url)
        bad.backend.settings.backoff_base_s = 0.01
        v = bad.score_sync([Sample("s", [{"role": "user", "content": "say hi"}], "hi please")])
        assert v[0].failed and "401" in v[0].errors["says_please"]


KEYS = {"judge.api_key": "sk-judge-9d1e", "judge.serve.env.HF_TOKEN": "hf_tok_55aa", "grpo.hub_token": "hub-77c3"}


def test_no_key_of_a_recipe_is_in_what_a_run_writes_of_it(monkeypatch):
    """recipe.resolved.json (and so an export's rlaif_recipe.json) and the recipe as a log would show it."""
    from rlaif.config.recipe import load_recipe
    monkeypatch.delenv("RLAIF_JUDGE_API_KEY", raising=False)
    cascade = '{judge: {model: artifacts/tiny/judge, api_key: sk-cascade-31f0}}'
    r = load_recipe("recipes/smoke.yaml", [f"{k}={v}" for k, v in KEYS.items()] + [f"judge.cascade={cascade}"],
                    check_files=False)
    assert r.judge.api_key == "sk-judge-9d1e" and r.judge.cascade.judge.api_key == "sk-cascade-31f0"  # still used
    written = r.model_dump_json(indent=2)
    shown = repr(r) + str(r)
    for secret in ("sk-judge-9d1e", "hf_tok_55aa", "hub-77c3", "sk-cascade-31f0"):
        assert secret not in written and secret not in shown, secret
    assert '"model": "artifacts/tiny/judge"' in written  # the rest is there as it was


def test_the_judge_key_can_come_from_the_environment(monkeypatch):
    """So that it need not be in the recipe or on the command line (where `ps` shows it)."""
    from rlaif.config.recipe import load_recipe
    monkeypatch.setenv("RLAIF_JUDGE_API_KEY", "sk-env-6b2a")
    r = load_recipe("recipes/smoke.yaml", check_files=False)
    assert r.judge.api_key == "sk-env-6b2a" and "sk-env-6b2a" not in r.model_dump_json()
    assert load_recipe("recipes/smoke.yaml", ["judge.api_key=other"], check_files=False).judge.api_key == "other"
    with pytest.raises(UserError, match="would expose the judge"):  # beyond loopback without a key: still refused
        monkeypatch.delenv("RLAIF_JUDGE_API_KEY")
        from rlaif.judge.server import VLLMServer
        VLLMServer.for_judge(load_recipe("recipes/smoke.yaml", ["judge.serve.host=0.0.0.0"],
                                         check_files=False).judge, None)
