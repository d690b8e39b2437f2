"""The README asks only for commands a fresh clone has: `make` (which installs everything else into the
project's venv), `git`, and `export` of the AWS variables the SDKs read. `sam` lives only in the venv and
the AWS CLI is not installed at all, so neither may appear as something to run. Every `make` command of
the documentation passes only variables its target reads, and the README's deploy steps are the guide's."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

from tests.docs import README, ROOT, documentation, make_target_variables

ALLOWED_COMMANDS = {"make", "git", "export"}
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
# `export` only of what the AWS SDKs and the SAM CLI read from the environment.
EXPORTABLE = re.compile(r"AWS_[A-Z_]+")
# A span whose first word is a bare lowercase word followed by more words reads as a command.
COMMAND_WORD = re.compile(r"[a-z][a-z0-9._-]*")


def shell_lines(markdown: str) -> list[str]:
    """The lines of the shell code blocks, comments and blanks left out."""
    lines = []
    for token in MarkdownIt("commonmark").parse(markdown):
        if token.type == "fence" and token.info.strip() in SHELL_FENCES:
            for line in token.content.replace("\\\n", " ").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    lines.append(line.strip())
    return lines


def inline_commands(markdown: str) -> list[str]:
    """Inline code that reads as a command: two words or more, the first a bare lowercase word."""
    commands = []
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        for child in token.children or []:
            words = child.content.split()
            if child.type == "code_inline" and len(words) >= 2 and COMMAND_WORD.fullmatch(words[0]):
                commands.append(child.content)
    return commands


def command_problems(markdown: str) -> list[str]:
    problems = []
    for command in [*shell_lines(markdown), *inline_commands(markdown)]:
        program = command.split()[0]
        if program not in ALLOWED_COMMANDS:
            problems.append(f"{command!r}: {program} is not make, git or export")
        elif program == "export":
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", command)
            if not names or not all(EXPORTABLE.fullmatch(name) for name in names):
                problems.append(f"{command!r}: export only AWS_* variables")
    return problems


def make_commands(text: str) -> list[tuple[str, set[str]]]:
    """Every `make <target> VAR=... ` in a text: the target and the variables given to it."""
    found = []
    value = r"(?:<[^>\n]*>|[^\s\]`<])*"  # a <placeholder> may hold spaces
    for match in re.finditer(rf"\bmake ([a-z][a-z0-9-]*)((?:[ \t]+\[?[A-Z][A-Z0-9_]*={value}\]?)*)", text):
        found.append((match.group(1), set(re.findall(r"([A-Z][A-Z0-9_]*)=", match.group(2)))))
    return found


def test_the_readme_asks_only_for_make_git_and_aws_exports() -> None:
    assert command_problems(README.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("markdown", "problem"),
    [
        ("Run `sam deploy --guided`.", "sam is not"),
        ("```bash\naws s3 cp a.wav s3://bucket/\n```", "aws is not"),
        ("```\npython scripts/operate.py status --key k\n```", "python is not"),
        ("```bash\nexport DEEPGRAM_API_KEY=secret\n```", "export only AWS_*"),
        ("`\"$(scripts/bootstrap)/bin/sam\" list stack-outputs`", None),  # a path, not a bare word: not caught
    ],
)
def test_a_command_that_is_not_installed_is_reported(markdown: str, problem: str | None) -> None:
    problems = command_problems(markdown)

    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_what_the_readme_may_ask_passes() -> None:
    markdown = (
        "```bash\nexport AWS_PROFILE=p AWS_REGION=us-east-1  # creds\nmake deploy GUIDED=1\n```\n"
        "`make status STACK=s KEY=k`, `git clone`, `s3://<input bucket>/<key>`, `Transcript Created`, `python3.13`"
    )

    assert command_problems(markdown) == []


def test_every_make_command_passes_only_variables_its_target_reads() -> None:
    targets = make_target_variables()
    commands = make_commands(documentation())

    assert len(commands) > 20
    wrong = {(target, tuple(sorted(given - targets.get(target, set())))) for target, given in commands}
    assert {(target, unread) for target, unread in wrong if unread} == set()


def test_an_unread_make_variable_is_reported() -> None:
    assert make_commands("`make status BUCKET=b KEY=k` and make upload STACK=<stack name> [KEY=k] FILE=f") == [
        ("status", {"BUCKET", "KEY"}),
        ("upload", {"STACK", "KEY", "FILE"}),
    ]


def test_the_readme_deploys_with_the_guides_commands() -> None:
    readme = README.read_text(encoding="utf-8")
    section = readme[readme.index("## Deploy in five steps") : readme.index("## Where outputs land")]
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    readme_steps = {(target, frozenset(given)) for target, given in make_commands(section)}
    guide_steps = {(target, frozenset(given)) for target, given in make_commands(guide)}

    assert {"secret", "deploy", "upload", "status", "delete"} <= {target for target, _ in readme_steps}
    assert readme_steps - guide_steps == set()
