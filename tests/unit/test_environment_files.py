"""environment.yml and pyproject.toml name the same pinned dependencies."""

import re
import tomllib

import yaml

from tests.conftest import REPO


def _norm(req: str) -> tuple[str, str]:
    name, _, version = req.partition("==")
    return re.sub(r"[-_.]+", "-", name.strip().lower()), version.strip()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("book", "dev"):
        reqs += project["optional-dependencies"][extra]
    expected = dict(_norm(r.split(";")[0].split("#")[0]) for r in reqs)
    assert all(v for v in expected.values()), "every dependency is pinned with =="

    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = dict(_norm(r) for r in pip_block if not r.startswith("-e"))
    assert listed == expected
    assert any(r.startswith("-e") and "book" in r and "dev" in r for r in pip_block)
    assert "python=3.11" in env["dependencies"]


def test_torch_stack_is_the_working_pair():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = dict(_norm(r) for r in project["dependencies"])
    assert deps["torch"] == "2.14.1"
    assert deps["torchvision"] == "0.29.1"
    assert deps["open-clip-torch"] == "3.3.0"
