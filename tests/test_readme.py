"""The README's set-up commands are what CI runs, and every `coin` command the README shows exists."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from coinpp.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_the_readme_gives_exactly_two_set_up_commands_and_ci_runs_them():
    commands = setup_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    install, tests = commands
    assert install.endswith("coin demo") and "pip install" in install and "pytest" in tests
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci and tests in ci


def test_every_coin_subcommand_the_readme_shows_exists():
    text = (ROOT / "README.md").read_text()
    shown = set(re.findall(r"^coin (\w+)", "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S)), re.M))
    assert shown >= {"encode", "decode", "info", "codecs", "bench", "train", "postfilter"}
    for command in sorted(shown):
        assert CliRunner().invoke(cli, [command, "--help"]).exit_code == 0, command


def test_the_readme_stays_a_users_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) < 15_000
    assert not re.search(r"\bsessions?\b|20[2-9][0-9]-[01][0-9]-[0-3][0-9]", text)
