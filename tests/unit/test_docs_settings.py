"""The documentation names the template's configuration as it is: 12 parameters, and everything else a
setting of ``Mappings: Settings:`` written ``Settings.<Group>.<Key>``. The name lists come from
template.yaml, so a parameter or setting renamed or removed there fails the page that still names it.

Code snippets are the README's and every docs page's inline code and the lines of their fenced blocks.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from samstack import load_template
from tests.docs import ROOT, pages

# A CamelCase name (AlarmEmail, Settings) not inside a dotted path, a word or a variable.
NAME = r"(?<![\w.$/-])([A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*)"
# A name given a value, as sam deploy's --parameter-overrides and samconfig's parameter_overrides take them.
ASSIGNED = re.compile(NAME + r"=")
SETTING_REFERENCE = re.compile(r"\bSettings\.([A-Za-z0-9]+)(?:\.([A-Za-z0-9]+))?")
# Where names are given to a deployment: only parameters may be (a setting there fails the deploy).
DEPLOY_CONTEXT = re.compile(r"\bsam deploy\b|\bmake deploy\b|\bparameter_overrides\b")
# The page that lists every setting by its bare name, in a table of groups.
SETTINGS_TABLE_PAGE = "configuration.md"


@dataclass(frozen=True)
class Template:
    parameters: frozenset[str]
    settings: dict[str, frozenset[str]]  # group -> keys
    other_names: frozenset[str]  # outputs, resources, conditions: names that are not configuration

    @property
    def setting_keys(self) -> frozenset[str]:
        return frozenset().union(*self.settings.values())

    def reference(self, key: str) -> str:
        """How the documentation names a setting: ``Settings.<Group>.<Key>`` (a key two groups share,
        such as ``MaximumEventAgeSeconds``, is named with each group it may mean)."""
        groups = [group for group, keys in self.settings.items() if key in keys]
        return " or ".join(f"Settings.{group}.{key}" for group in groups)


def read_template(path: Path = ROOT / "template.yaml") -> Template:
    template = load_template(path)
    settings = {group: frozenset(keys) for group, keys in template["Mappings"]["Settings"].items()}
    other = {*template.get("Outputs", {}), *template["Resources"], *template.get("Conditions", {})}
    return Template(frozenset(template["Parameters"]), settings, frozenset(other))


@cache
def template() -> Template:
    return read_template()


def snippets(markdown: str) -> list[str]:
    """The inline code and the lines of the fenced or indented code blocks of a Markdown text."""
    found: list[str] = []
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        if token.type in {"fence", "code_block"}:
            found.extend(line for line in token.content.replace("\\\n", " ").splitlines() if line.strip())
        for child in token.children or []:
            if child.type == "code_inline":
                found.append(child.content)
    return found


def setting_problems(snippet: str, names: Template) -> list[str]:
    """What a code snippet gets wrong about the template's parameters and settings."""
    problems = []
    for group, key in SETTING_REFERENCE.findall(snippet):
        if group not in names.settings:
            problems.append(f"Settings.{group}: no such group in Mappings: Settings")
        elif key and key not in names.settings[group]:
            problems.append(f"Settings.{group}.{key}: no such setting")
    deploying = bool(DEPLOY_CONTEXT.search(snippet))
    for name in ASSIGNED.findall(snippet):
        if name in names.parameters:
            continue
        if deploying:
            problems.append(f"{name}=: passed to a deployment, but not one of the template's Parameters")
        elif name in names.setting_keys:
            problems.append(f"{name}=: a setting, not a parameter: write {names.reference(name)}")
    if deploying:  # the local world's --parameter-overrides takes them; sam deploy does not
        for group, key in re.findall(r"\bSettings\.(\w+)\.(\w+)=", snippet):
            problems.append(f"Settings.{group}.{key}=: a setting can't be passed to sam deploy")
    return problems


def bare_setting_problems(snippet: str, names: Template) -> list[str]:
    """A setting named by its bare key says nothing of where it is set: it must read Settings.G.K
    (unless the name is also a parameter, an output or a resource, which the snippet may mean)."""
    name = snippet.strip()
    if name in names.setting_keys and name not in names.parameters | names.other_names:
        return [f"`{name}`: a setting, write `{names.reference(name)}`"]
    return []


def prose_problems(markdown: str, names: Template) -> list[str]:
    """`X` called a parameter must be one; `X` called a setting must be one."""
    text = " ".join(markdown.split())
    problems = []
    called_parameter = r"`([A-Za-z.]+)` (?:stack |template )?parameters?\b|\bparameters? `([A-Za-z.]+)`"
    for match in re.finditer(called_parameter, text):
        name = match.group(1) or match.group(2)
        if name not in names.parameters:
            problems.append(f"`{name}` is called a parameter, but it is not one of the template's Parameters")
    called_setting = r"`([A-Za-z.]+)` settings?\b|\bsettings? `([A-Za-z.]+)`"
    for match in re.finditer(called_setting, text):
        name = match.group(1) or match.group(2)
        reference = SETTING_REFERENCE.fullmatch(name)
        if not (name in names.setting_keys or reference):  # a reference's entry: setting_problems
            problems.append(f"`{name}` is called a setting, but Mappings: Settings has no such entry")
    return problems


@cache
def repository_text() -> str:
    """Every tracked source, template, configuration and data file except the documentation."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    kept = (".py", ".yaml", ".yml", ".json", ".toml", ".txt", ".cfg", "Makefile")
    texts = []
    for name in tracked.stdout.splitlines():
        path = ROOT / name
        if name.endswith(kept) and not name.startswith("docs/") and path.is_file():
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(texts)


@cache
def words_of(text: str) -> frozenset[str]:
    """A text's words, once per text: a set answers "is this name used?" without a regex per name."""
    return frozenset(re.findall(r"\w+", text))


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def unknown_names(snippet: str, repository: str) -> list[str]:
    """CamelCase names of two words or more that nothing in the repository defines or uses
    (as written, or in snake_case: ``TransactWriteItems`` is boto3's ``transact_write_items``)."""
    unknown = []
    for name in re.findall(NAME, snippet):
        if not re.search(r"[a-z0-9][A-Z]", name):
            continue
        if name not in words_of(repository) and snake_case(name) not in repository:
            unknown.append(f"`{name}`: named nowhere in the repository (a removed parameter?)")
    return unknown


def page_problems(page: Path, names: Template) -> list[str]:
    markdown = page.read_text(encoding="utf-8")
    problems = prose_problems(markdown, names)
    for snippet in snippets(markdown):
        problems += setting_problems(snippet, names)
        if page.name != SETTINGS_TABLE_PAGE:
            problems += bare_setting_problems(snippet, names)
    return [f"{page.relative_to(ROOT)}: {problem}" for problem in problems]


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_the_page_names_parameters_and_settings_as_the_template_has_them(page: Path) -> None:
    assert page_problems(page, template()) == []


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_every_camelcase_name_in_the_page_exists_in_the_repository(page: Path) -> None:
    repository = repository_text()
    named = [
        name
        for snippet in snippets(page.read_text(encoding="utf-8"))
        for name in unknown_names(snippet, repository)
    ]

    assert named == []


def test_the_name_lists_come_from_the_template() -> None:
    names = template()

    assert "DeepgramOptions" in names.parameters
    assert len(names.parameters) <= 12
    assert "DeliveryMode" in names.settings["Deepgram"]
    assert "InputPrefix" in names.setting_keys
    assert "InputPrefix" not in names.parameters


SAMPLE = Template(
    parameters=frozenset({"EnvironmentName", "DeepgramOptions", "BufferedMode"}),
    settings={
        "Capacity": frozenset({"EnableBackfill"}),
        "Outputs": frozenset({"OutputFormats", "EventBusName"}),
    },
    other_names=frozenset({"EventBusName", "BackfillRole"}),
)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        (
            "`sam deploy --parameter-overrides EnableBackfill=true`",
            ["EnableBackfill=: passed to a deployment"],
        ),
        (
            '```toml\nparameter_overrides = "EnvironmentName=prod DeepgramModel=nova-2"\n```',
            ["DeepgramModel=: passed"],
        ),
        ("`make deploy` with `Settings.Capacity.EnableBackfill=true`", []),
        (
            "`sam deploy --parameter-overrides Settings.Capacity.EnableBackfill=true`",
            ["a setting can't be passed"],
        ),
        ("set `OutputFormats=json`", ["OutputFormats=: a setting, not a parameter"]),
        (
            "`--parameter-overrides Settings.Outputs.OutputFormat=json`",
            ["Settings.Outputs.OutputFormat: no such"],
        ),
        ("`Settings.Privacy.InputRetentionDays`", ["Settings.Privacy: no such group"]),
        (
            "the `OutputFormats` pattern",
            ["`OutputFormats`: a setting, write `Settings.Outputs.OutputFormats`"],
        ),
        ("the `UploadOptions` parameter", ["`UploadOptions` is called a parameter"]),
        ("the setting `DeliveryMode`", ["`DeliveryMode` is called a setting"]),
        (
            "the `EventBusName` output and `BackfillRole`; `BufferedMode=true`; "
            "the `DeepgramOptions` parameter",
            [],
        ),
        (
            "the setting `Settings.Capacity.EnableBackfill`; "
            "`sam deploy --parameter-overrides EnvironmentName=prod`",
            [],
        ),
    ],
)
def test_a_name_the_template_does_not_have_is_reported(markdown: str, expected: list[str]) -> None:
    problems = prose_problems(markdown, SAMPLE)
    for snippet in snippets(markdown):
        problems += setting_problems(snippet, SAMPLE) + bare_setting_problems(snippet, SAMPLE)

    assert len(problems) == len(expected), problems
    assert all(prefix in problem for problem, prefix in zip(problems, expected, strict=True)), problems


def test_a_removed_parameter_named_in_code_is_unknown() -> None:
    repository = "DEEPGRAM_MODEL = 1\ndef transact_write_items(): ...\nclass ParkingQueue: ..."

    assert unknown_names(
        "another `DeepgramModel` or TransactWriteItems, ParkingQueue, Settings", repository
    ) == ["`DeepgramModel`: named nowhere in the repository (a removed parameter?)"]
