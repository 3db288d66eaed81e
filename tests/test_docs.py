"""The user docs stay true: generated reference current, every documented command valid.

Commands are taken from the ```bash blocks of the pages below. Each ``cetl`` line must parse
with the real argument parser, and its names and ``--set`` keys must resolve against the
registries and the schema (the config is built, nothing is trained); the cheap ones
(``cetl list``, ``cetl show-config``, ``--help``, the reference check) are run. Python blocks
must compile, and their ``cetl.adapt(...)`` calls must fit the function's signature.
"""

from __future__ import annotations

import ast
import inspect
import re
import shlex
from pathlib import Path

import pytest

import cetl
from cetl.cli import build_parser, main
from cetl.config import PROFILES, parse_set_overrides
from cetl.errors import ConfigError
from cetl.experiments import EXPERIMENTS, is_config_file, merge_config, resolve
from cetl.methods import METHODS
from cetl.networks import NETWORKS
from cetl.workflows import docs_reference
from cetl.workflows.adapt import source_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "docs" / name for name in ("getting-started.md", "adapt.md", "extending.md", "glossary.md")
] + [ROOT / "README.md", ROOT / "examples" / "adapt_usps" / "README.md"]
RUNS = ("list", "show-config")
"""Subcommands cheap enough to run for real."""


def blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def commands(page: Path) -> list[str]:
    """Shell lines of a page's bash blocks, continuations joined, comments dropped."""
    found = []
    for block in blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


DOCUMENTED = [(page.relative_to(ROOT).as_posix(), line) for page in PAGES for line in commands(page)]


def test_pages_document_commands():
    by_page = {page for page, _ in DOCUMENTED}
    assert {"docs/adapt.md", "docs/getting-started.md", "docs/extending.md"} <= by_page
    assert any(line.startswith("cetl adapt") for _, line in DOCUMENTED)


def test_config_reference_is_generated_from_the_current_schema():
    committed = (ROOT / "docs" / "config-reference.md").read_text(encoding="utf-8")
    assert committed == docs_reference.render(), "run: python -m cetl.workflows.docs_reference"
    keys = ("data.unlabelled", "source.tap", "train.stage_epochs", "method.keep_prob", "method.temperature")
    for key in keys:
        assert f"| `{key}` |" in committed


def test_reference_check_fails_on_a_stale_page(tmp_path):
    stale = tmp_path / "reference.md"
    stale.write_text(docs_reference.render().replace("data.unlabelled", "data.unlabeled"))
    assert docs_reference.main(["--check", "--output", str(stale)]) == 1
    assert docs_reference.main(["--output", str(stale)]) == 0
    assert docs_reference.main(["--check", "--output", str(stale)]) == 0


@pytest.mark.parametrize(("page", "line"), DOCUMENTED, ids=[f"{p}: {c[:60]}" for p, c in DOCUMENTED])
def test_documented_command_is_valid(page, line, capsys):
    argv = shlex.split(line)
    env = {}
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):  # VAR=value prefixes
        name, _, value = argv.pop(0).partition("=")
        env[name] = value
    program, args = argv[0], argv[1:]
    if program in ("pip", "python") and args[:2] != ["-m", "cetl.workflows.docs_reference"]:
        return  # installing and running tests or scripts are not cetl commands
    if program == "python":
        assert docs_reference.main(["--check", *args[2:]]) == 0
        return
    assert program == "cetl", f"{page}: unexpected command {line!r}"
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exit_:
        assert exit_.code == 0 and args == ["--version"], f"{page}: {line!r} does not parse"
        return
    check = CHECKS.get(parsed.command)
    if check is not None:
        check(parsed)
    if parsed.command in RUNS:
        assert main(args) == 0, capsys.readouterr().err


def _check_train(parsed) -> None:
    if is_config_file(parsed.target):  # a run's config.yaml made by an earlier command
        return
    resolve(parsed.target, method=parsed.method, profile=parsed.profile, sets=parsed.sets)


def _check_compare(parsed) -> None:
    for method in parsed.methods.split(","):
        resolve(parsed.experiment, method=method, profile=parsed.profile, sets=parsed.sets)


def _check_adapt(parsed) -> None:
    """What adapt_config checks, without the user's files: names, profile, --set keys, model names."""
    METHODS.get(parsed.method)
    if parsed.target_net != "auto":
        NETWORKS.get(parsed.target_net)
    assert parsed.profile in PROFILES
    template = EXPERIMENTS.get("tl_any_to_own")(parsed.profile)
    merge_config(template, {"method": {"name": parsed.method}})
    merge_config(template, parse_set_overrides(parsed.sets))
    if parsed.source and not parsed.source.endswith(".onnx") and "/" not in parsed.source:
        assert source_config(parsed.source, tap=parsed.tap)["kind"] in ("torchvision", "timm")


CHECKS = {
    "train": _check_train,
    "show-config": _check_train,
    "compare": _check_compare,
    "adapt": _check_adapt,
}


def test_a_wrong_documented_command_would_fail(capsys):
    """The checks above are not vacuous: a typo in a flag, key or name is caught."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["adapt", "--target-data", "x", "--label-per-class", "3"])
    with pytest.raises(ConfigError, match=r"unknown key 'train\.round'"):
        _check_adapt(build_parser().parse_args(["adapt", "--target-data", "x", "--set", "train.round=3"]))
    with pytest.raises(ConfigError, match=r"unknown model 'resnet181'"):
        _check_adapt(build_parser().parse_args(["adapt", "--target-data", "x", "--source", "resnet181"]))
    capsys.readouterr()


def _python_blocks() -> list[tuple[str, str]]:
    return [(page.relative_to(ROOT).as_posix(), code) for page in PAGES for code in blocks(page, "python")]


@pytest.mark.parametrize(("page", "code"), _python_blocks())
def test_documented_python_compiles_and_fits_the_api(page, code):
    tree = ast.parse(code, filename=page)
    signature = inspect.signature(cetl.adapt)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("cetl.adapt", "adapt"):
            signature.bind(*[None] * len(node.args), **{k.arg: None for k in node.keywords if k.arg})


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files(page):
    text = page.read_text(encoding="utf-8")
    if page.name == "README.md" and page.parent == ROOT:  # only this feature's section of it
        text = text.partition("## Use your own data")[2].partition("\n## ")[0]
        assert "docs/adapt.md" in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
