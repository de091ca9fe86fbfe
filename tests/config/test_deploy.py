"""deploy/: the compose recipe and its kbot.yaml agree with each other and with kbot."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import yaml

from config import load_config
from tests.conftest import REPO

DEPLOY = REPO / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_the_deploy_config_loads_with_the_environment_compose_gives_it() -> None:
    env = {
        k: re.sub(r"\$\{(\w+):[-?][^}]*\}", "x", str(v))
        for k, v in compose()["x-kbot"]["environment"].items()
    }
    cfg = load_config(DEPLOY / "kbot.yaml", env=env)
    storage = cfg.storage
    assert storage.database_url.startswith("postgresql+psycopg://kbot:")
    assert storage.chroma_url == "http://chroma:8000"
    assert storage.redis_url == "redis://redis:6379/0"
    assert storage.migrates is False  # the migrate service runs `kbot db upgrade`
    assert cfg.server.host == "0.0.0.0"
    # Every ${VAR} the config reads is one compose sets.
    wanted = set(re.findall(r"\$\{(\w+)", (DEPLOY / "kbot.yaml").read_text()))
    assert wanted <= set(env), wanted - set(env)


def test_compose_runs_n_web_processes_one_worker_and_the_engines() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "chroma", "redis", "migrate", "web", "worker"}
    assert services["web"]["command"] == ["kbot", "serve", "--no-scheduler"]
    assert services["worker"]["command"] == ["kbot", "worker"]
    assert services["migrate"]["command"] == ["kbot", "db", "upgrade"]
    assert "replicas" not in services["worker"].get("deploy", {})
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    # The Chroma server speaks the same API version as the client kbot installs.
    assert services["chroma"]["image"] == f"chromadb/chroma:{version('chromadb')}"


def test_the_image_copies_what_exists_and_installs_the_cpu_torch_first() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1] for line in lines if line.startswith("COPY ")]
    for src in copies:
        assert (REPO / src).exists(), src
    installs = [line for line in lines if "pip install" in line]
    assert "torch==2.13.0" in installs[0] and "whl/cpu" in installs[0]
    assert Path(REPO / "pyproject.toml").read_text().count('"torch==2.13.0"') == 1
