"""`make setup` on the hosts GPU users have, reproduced with stand-ins on PATH: an NVIDIA driver too old for the
CUDA 13 wheels, a Python 3.10 `python3`, a Python without venv's pip bootstrap, a Chromium that cannot start and an
apt-get that cannot install one. Each is met before anything is installed, with a sentence that says what to do."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what the setup script runs besides Python, pip and the stand-ins
TOOLS = ["bash", "cat", "sha256sum", "cut", "grep", "head", "tr", "id", "mktemp", "tee", "rm", "dirname", "env"]


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


@pytest.fixture
def host(tmp_path):
    """A copy of the setup script and what it reads, and a bin folder that is the whole PATH: the real tools it
    needs, and whatever stand-ins a test puts there."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup_env.sh", repo / "scripts")
    shutil.copytree(ROOT / "requirements", repo / "requirements")
    shutil.copy(ROOT / "pyproject.toml", repo)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), bin_ / tool)

    def run(*args, python=sys.executable, **env):
        if python:
            os.symlink(python, bin_ / "python3.11")
        r = subprocess.run(["bash", str(repo / "scripts" / "setup_env.sh"), *args], capture_output=True, text=True,
                           env={"PATH": str(bin_), "HOME": str(tmp_path), **env}, timeout=120)
        return r, repo
    return bin_, run


def nvidia_smi(bin_: Path, driver: str) -> None:
    _script(bin_ / "nvidia-smi", f"""case "$*" in
  *driver_version*) echo "{driver}" ;;
  -L) echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)" ;;
esac
""")


def test_a_driver_older_than_580_stops_setup_before_anything_is_installed(host):
    bin_, run = host
    nvidia_smi(bin_, "550.54.15")
    r, repo = run("all")
    assert r.returncode == 1
    assert "550.54.15" in r.stderr and ">= 580" in r.stderr and "docs/gpu.md" in r.stderr
    assert not (repo / ".venv").exists() and not (repo / ".venv-judge").exists()


def test_driver_580_passes_the_host_check(host):
    bin_, run = host
    nvidia_smi(bin_, "580.95.05")
    r, _ = run("check")
    assert r.returncode == 0, r.stderr
    assert "580.95.05" in r.stdout


def test_a_python_3_10_host_is_told_how_to_get_3_11(host):
    bin_, run = host
    _script(bin_ / "python3", """case "$*" in
  -V) echo "Python 3.10.12" ;;
  *) exit 1 ;;
esac
""")
    r, repo = run("all", python=None)
    assert r.returncode == 1
    assert "Python >= 3.11" in r.stderr and "3.10.12" in r.stderr and "PYTHON=python3.11" in r.stderr
    assert not (repo / ".venv").exists()


def test_a_python_without_venv_support_is_named(host):
    bin_, run = host
    real = sys.executable
    _script(bin_ / "python3.12", f"""for a in "$@"; do [[ "$a" == *ensurepip* ]] && exit 1; done
exec {real} "$@"
""")
    r, repo = run("all", python=None)
    assert r.returncode == 1
    assert "cannot make virtual environments" in r.stderr and "-venv" in r.stderr
    assert not (repo / ".venv").exists()


def test_a_chromium_that_cannot_start_and_an_apt_get_that_fails_are_not_fatal(host):
    bin_, run = host
    _script(bin_ / "chromium", 'echo "Command \'/usr/bin/chromium\' requires the chromium snap to be installed." >&2\n'
                                "exit 1\n")
    _script(bin_ / "apt-get", "echo 'E: Unable to locate package chromium' >&2\nexit 100\n")
    r, _ = run("browser")
    assert r.returncode == 0, r.stderr
    assert "WARNING: no working chromium" in r.stderr and "RLAIF_CHROMIUM" in r.stderr


def test_pyproject_asks_for_the_python_setup_checks_for():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in text


def _uv_stand_in(bin_: Path, record: Path, answer: str) -> None:
    """A `uv` on PATH that writes down its argv and environment, then fails as uv does: `answer` on stderr."""
    _script(bin_ / "uv", f"""echo "$@" > {record}.argv
env > {record}.env
echo "{answer}" >&2
exit 1
""")


def test_uv_installs_with_the_indexes_and_wheel_folders_pip_is_configured_with_and_none_reach_argv(host, tmp_path):
    bin_, run = host
    record = tmp_path / "uv"
    _uv_stand_in(bin_, record, "Because torch==2.13.0+cpu was not found in the package registry, no solution")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    # pip.conf as people write it: a list over several lines, and an index the environment overrides
    conf = tmp_path / ".config" / "pip" / "pip.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[global]\nindex-url = https://from-the-file.example/simple\n"
                    "extra-index-url =\n    https://user:tok3n@wheels.example/simple\n    file:///srv/simple\n")
    r, _ = run("trainer", PIP_INDEX_URL="https://from-the-env.example/simple",
               PIP_FIND_LINKS=f"{wheels} /no/such/folder", PIP_NO_INDEX="1")
    assert r.returncode == 1
    # uv failed: pip was asked next (it has no index here), and its failure on the CPU torch pin is explained
    assert "installing with pip instead" in r.stderr
    assert "torch==2.13.0+cpu" in r.stderr and "PIP_EXTRA_INDEX_URL" in r.stderr
    argv = (tmp_path / "uv.argv").read_text()
    env = dict(line.split("=", 1) for line in (tmp_path / "uv.env").read_text().splitlines() if "=" in line)
    assert argv.split()[:3] == ["pip", "install", "-q"] and "--python .venv/bin/python" in argv
    assert "tok3n" not in argv and "example" not in argv and str(wheels) not in argv
    assert env["UV_EXTRA_INDEX_URL"].split() == ["https://user:tok3n@wheels.example/simple", "file:///srv/simple"]
    assert env["UV_DEFAULT_INDEX"] == "https://from-the-env.example/simple"  # PIP_INDEX_URL wins, as in pip
    assert env["UV_FIND_LINKS"] == str(wheels)  # the missing folder left out: pip warns, uv would stop
    assert env["UV_NO_INDEX"] == "1"
    assert env["UV_INDEX_STRATEGY"] == "unsafe-best-match"
    assert env["UV_COMPILE_BYTECODE"] == "1"  # as pip does: without it, every process compiles torch afresh


def test_when_uv_fails_pip_installs_instead_and_says_so(host, tmp_path):
    bin_, run = host
    _uv_stand_in(bin_, tmp_path / "uv", "error: Failed to fetch: connection reset")
    # pip finds nothing either (no index at all), so the run ends quickly at pip's own answer
    r, _ = run("trainer", PIP_NO_INDEX="1")
    assert r.returncode == 1
    assert "installing with pip instead" in r.stderr
    assert "No matching distribution found for torch" in r.stderr or "torch==2.13.0+cpu" in r.stderr


def test_rlaif_pip_1_skips_uv(host, tmp_path):
    bin_, run = host
    _uv_stand_in(bin_, tmp_path / "uv", "never asked")
    r, _ = run("trainer", RLAIF_PIP="1", PIP_NO_INDEX="1")
    assert r.returncode == 1
    assert not (tmp_path / "uv.argv").exists() and "installing with pip instead" not in r.stderr
