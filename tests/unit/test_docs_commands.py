"""The README asks only for commands a fresh clone has: `make` (which installs everything else into the
project's venv), `git`, and `export` of the AWS variables the SDKs read. `sam` lives only in the venv and
the AWS CLI is not installed at all, so neither may appear as something to run. Every `make` command of
the documentation passes only variables its target reads, and the README's deploy steps are the guide's."""

from __future__ import annotations

import re

import boto3
import pytest
from markdown_it import MarkdownIt

from samstack import load_template
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
        ('`"$(scripts/bootstrap)/bin/sam" list stack-outputs`', None),  # a path, not a bare word: not caught
    ],
)
def test_a_command_that_is_not_installed_is_reported(markdown: str, problem: str | None) -> None:
    problems = command_problems(markdown)

    if problem is None:
        assert problems == []
    else:
        [reported] = problems
        assert problem in reported


def test_what_the_readme_may_ask_passes() -> None:
    markdown = (
        "```bash\nexport AWS_PROFILE=p AWS_REGION=us-east-1  # creds\nmake deploy GUIDED=1\n```\n"
        "`make status STACK=s KEY=k`, `git clone`, `s3://<input bucket>/<key>`, "
        "`Transcript Created`, `python3.13`"
    )

    assert command_problems(markdown) == []


def test_every_make_command_passes_only_variables_its_target_reads() -> None:
    targets = make_target_variables()
    commands = make_commands(documentation())

    assert len(commands) > 20
    wrong = {(target, tuple(sorted(given - targets.get(target, set())))) for target, given in commands}
    assert {(target, unread) for target, unread in wrong if unread} == set()


def test_an_unread_make_variable_is_reported() -> None:
    assert make_commands(
        "`make status BUCKET=b KEY=k` and make upload STACK=<stack name> [KEY=k] FILE=f"
    ) == [
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


# The make targets that run scripts/operate.py against a deployed stack (backfill only with STACK).
OPERATOR_TARGETS = {"upload", "status", "failures", "report", "redrive", "backfill"}


# Values of the right shape for the variables the commands check (OPTIONS is a query string).
SHOWN_VALUES = {"SINCE": "2026-01-01", "UNTIL": "2026-02-01", "OPTIONS": "language=es"}


def operate_argv(target: str, given: set[str], recipe: str, existing_file: str) -> list[str]:
    """The scripts/operate.py arguments a make target's recipe builds from the given variables."""
    argv = [target]
    for flag, name in re.findall(r'(--[a-z-]+) "\$\(([A-Z_]+)\)"', recipe):
        if name in given or f"$(if $({name})" not in recipe:
            argv += [
                flag,
                {**SHOWN_VALUES, "FILE": existing_file}.get(name, "x"),
            ]
    argv += [
        flag for name, flag in re.findall(r"\$\(if \$\(([A-Z_]+)\),(--[a-z-]+)\)", recipe) if name in given
    ]
    return argv


def _recipe(target: str) -> str:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]


def test_every_operator_command_the_documentation_shows_has_what_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run each shown command's arguments through scripts/operate.py: a usage error (exit 2, such as
    `make status` without STACK: nothing then names the output bucket) fails; AWS is never reached."""
    from botocore.exceptions import NoCredentialsError

    from scripts import operate

    # A stack with every output the template can give (BackfillRoleArn, the buffered queues, ...).
    outputs = dict.fromkeys(load_template(ROOT / "template.yaml")["Outputs"], "x")
    monkeypatch.setattr(operate, "stack_outputs", lambda stack: outputs)

    def no_aws(*args: object, **kwargs: object) -> None:
        raise NoCredentialsError

    monkeypatch.setattr(boto3, "client", no_aws)
    shown = {
        (target, frozenset(given))
        for target, given in make_commands(documentation())
        # a bare `make failures` in prose names the command; one with variables shows a use of it
        if target in OPERATOR_TARGETS and given and (target != "backfill" or "STACK" in given)
    }
    assert {"status", "upload", "redrive"} <= {target for target, _ in shown}
    unusable = []
    for target, given in sorted(shown, key=str):
        argv = operate_argv(target, set(given), _recipe(target), str(README))
        try:
            operate.main(argv)
        except SystemExit as exit_:
            unusable.append((target, sorted(given), exit_.code))
    assert unusable == []


def test_a_command_missing_what_it_needs_exits_with_a_usage_error() -> None:
    from scripts import operate

    argv = operate_argv("status", {"KEY"}, _recipe("status"), str(README))  # no STACK, no BUCKET

    assert argv == ["status", "--key", "x"]
    with pytest.raises(SystemExit) as exit_:
        operate.main(argv)
    assert exit_.value.code == 2
