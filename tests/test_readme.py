"""The README cannot drift: its first commands, its command reference and its spec example."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

from batcher.spec import JobSpec, parse_spec

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
RUN_CLI = "from batcher.cli import main; main()"  # when the console script is not installed
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _readme_cli():
    path = REPO / "scripts" / "readme_cli.py"
    spec = importlib.util.spec_from_file_location("readme_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def readme_cli():
    return _readme_cli()


def test_first_commands_are_make_demo_and_make_test():
    text = README.read_text()
    _, first_block = FENCE.search(text).groups()
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_command_reference_matches_help(readme_cli):
    in_readme = readme_cli.current(README.read_text())
    assert in_readme == readme_cli.generate(), (
        "README.md's command reference is stale: run .venv/bin/python scripts/readme_cli.py --write"
    )


def test_reference_is_what_the_installed_command_prints(readme_cli):
    # click wraps at min(terminal width, 80) minus 2: a terminal of 80 columns or more.
    env = {**os.environ, "COLUMNS": str(readme_cli.WIDTH + 2)}
    env.pop("BATCHER_DB", None)
    script = Path(sys.executable).parent / "batcher"
    command = [str(script)] if script.exists() else [sys.executable, "-c", RUN_CLI]
    out = subprocess.run(
        [*command, "--help"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out == readme_cli.help_text(())
    assert f"```text\n{out}```" in README.read_text()


def test_command_paths_walk_nested_groups_and_skip_hidden(readme_cli):
    @click.group()
    def root():
        """Root."""

    @root.group()
    def schedule():
        """Schedules."""

    @schedule.command()
    def add():
        """Add one."""

    @root.command(hidden=True)
    def secret():
        """Hidden."""

    @root.command()
    def run():
        """Run."""

    paths = list(readme_cli.command_paths(root))
    assert paths == [(), ("run",), ("schedule",), ("schedule", "add")]


def test_check_and_write_on_a_stale_readme(readme_cli, tmp_path, monkeypatch, capsys):
    fake = tmp_path / "README.md"
    stale = readme_cli.generate().replace("Usage: batcher ingest", "Usage: batcher eat")
    fake.write_text(f"# title\n\n{stale}\n\n## After\n")
    monkeypatch.setattr(readme_cli, "README", fake)
    assert readme_cli.main(["--check"]) == 1
    assert "+Usage: batcher ingest" in capsys.readouterr().out
    assert readme_cli.main(["--write"]) == 0
    assert readme_cli.main(["--check"]) == 0
    text = fake.read_text()
    assert text.startswith("# title\n\n") and text.endswith("\n\n## After\n")


def test_check_without_markers_says_where_to_put_them(readme_cli, tmp_path, monkeypatch):
    fake = tmp_path / "README.md"
    fake.write_text("# title\n")
    monkeypatch.setattr(readme_cli, "README", fake)
    with pytest.raises(SystemExit, match="cli-reference:start"):
        readme_cli.main(["--check"])


def test_spec_example_in_readme_is_a_valid_spec_naming_every_section():
    blocks = [body for lang, body in FENCE.findall(README.read_text()) if lang == "toml"]
    for worked in blocks[1:]:  # the providers' worked specs must be valid specs too
        parse_spec(tomllib.loads(worked), "README.md")
    data = tomllib.loads(blocks[0])
    spec = parse_spec(data, "README.md")  # an unknown or misspelt key raises SpecError
    assert spec.tiers["frontier"] == "anthropic:claude-sonnet-4-6"
    missing = set(JobSpec.model_fields) - {"path"} - set(data)
    assert not missing, f"document these spec keys in README.md's example: {sorted(missing)}"


def test_mentions_of_missing_commands_are_reported(readme_cli):
    text = (
        "Run `batcher ingest jobs/example.toml --skip-invalid`, then `batcher nosuch RUN`.\n"
        "```\nbatcher sandbox --port 8765\nbatcher sandbox2\n```\n"
        f"{readme_cli.START}\n`batcher inside-the-reference`\n{readme_cli.END}\n"
    )
    assert readme_cli.unknown_commands(text) == ["batcher nosuch", "batcher sandbox2"]
