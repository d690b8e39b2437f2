"""The documentation: a short README, a site that builds, links that resolve, nothing lost in the move
from the 1,313-line README to docs/, and an architecture picture that is what its source draws."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from scripts import architecture_diagram, check_docs
from tests.docs import README, ROOT, documentation, pages

# One or more phrases of every section the README had before the site (2026-12), by section: each must
# still be said somewhere in the README or docs/. "Configuration" and "Deploying to AWS" are not here:
# they were rewritten (docs/configuration.md, docs/deploy.md), not moved.
MOVED = {
    "intro": ["Drop audio into an S3 bucket", "emulator that really transcribes with pocketsphinx"],
    "The two commands": [
        "make demo OUTAGE=10",
        "~/.cache/dg-transcribe/venv-<hash>",
        "scripts/make-sample-audio",
    ],
    "Architecture": ["the one reading of `template.yaml`", "Docker-free Lambda containers"],
    "Where to change what": ["bound AWS calls differently", "classify a new Deepgram or S3 error"],
    "Every way in": ["When to choose which", "SNS subscription (and unsubscription) confirmations"],
    "What the transcribe function does, per object": [
        "Presigns a SigV4 GET URL",
        "Writes Deepgram's response unchanged",
    ],
    "Where outputs land": ["transcripts/_long-keys/<sha256 of key>.json", "_unsafe-keys/"],
    "Ordering: the latest version wins": ["an object's outcome is its key's latest version's"],
    "The derived formats": ["what `deepgram-captions` makes", "An empty transcript"],
    "error classes": ["deepgram-payload-too-large", "How to tell a deployment fault from a bad object"],
    "Archived objects": ["TranscribeRestoredObjects", "Object Restore Completed"],
    "Failure model: nothing is lost": ["Why a `DeadLetterQueue` and not an on-failure destination"],
    "Where to look when a file did not produce a transcript": ["`class: parked` means the retries ran out"],
    "Operator commands": ["start-message-move-task", "REASON=deepgram-payment-required"],
    "The nothing-lost run": ["NOTHING LOST", "billable beyond one per version"],
    "Long answers": ["A paid answer is not paid again when its write fails", "transcriber-kept-answers"],
    "Delivery modes": ["Is auto's first request billed?", "recognition_limit_bytes"],
    "Capacity": ["Planning estimate", "Counting items, not a counter"],
    "Backfill": ["Why Batch Operations and not a Step Functions Distributed Map", "Report_CSV_20180820"],
    "Per-upload options": ["The extra HEAD, and what it costs", "x-amz-meta-dg-<option>"],
    "Cost you can see": ["The caveat: an estimate, not a bill"],
    "The dashboard": ["`<stack>-transcriber`", "TranscriptionsFailedByReason"],
    "Privacy": ["Upload with SSE-KMS under another key"],
    "Completion events": ["At least once, never before the outputs", "CompletionEventsSampleRule"],
    "Security and failure guarantees": ["Uploaders cannot redirect or re-tag a transcript", "IAM scope"],
    "The local world": ["AtomicDynamoDB", "A sample recording"],
    "Invoking a handler on a sample event": ["events/sqs-sns-subscription-confirmation.json"],
    "sam local invoke, for real": ["Host architecture.", "skip_pull_image = true"],
    "What the artifact ships": ["Why ship the SDK rather than rely on the runtime's"],
    "Benchmarks": ["What dominates the misses", "bench/results.md"],
    "Tests": ["fails under 95 %", "test_boundaries.py"],
}


def _said(text: str) -> str:
    return " ".join(text.split())


def test_the_readme_is_short_and_its_lines_fit_a_screen() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()

    assert len(lines) <= 300
    assert [number for number, line in enumerate(lines, 1) if len(line) > 200] == []


@pytest.mark.parametrize("section", sorted(MOVED))
def test_what_the_long_readme_said_is_still_said(section: str) -> None:
    said = _said(documentation())

    assert [phrase for phrase in MOVED[section] if _said(phrase) not in said] == []


def test_every_make_target_the_documentation_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, flags=re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", documentation()))

    assert named, "the documentation names make targets"
    assert named - targets == set()


def test_the_committed_architecture_picture_is_what_its_source_draws() -> None:
    committed = architecture_diagram.PICTURE.read_text(encoding="utf-8")

    assert committed == architecture_diagram.render(), "run `make diagram`, commit docs/img/architecture.svg"


def test_the_readme_shows_the_picture_and_links_every_page() -> None:
    targets = check_docs.link_targets(README.read_text(encoding="utf-8"))
    linked = {target.split("#")[0] for target in targets}

    assert "docs/img/architecture.svg" in linked
    # docs/index.md is the site's home page: on GitHub the README is the home page
    assert {f"docs/{page.name}" for page in pages()[1:] if page.name != "index.md"} <= linked


def test_the_readme_links_resolve() -> None:
    assert check_docs.link_problems(README) == []


def test_a_missing_file_or_anchor_in_the_readme_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Two words\n\n## Two words\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n[ok](docs/page.md#two-words-1) [ok](#title) [web](https://example.com/x.md#y)\n"
        "[gone](docs/gone.md) [bad anchor](docs/page.md#three-words) ![img](docs/missing.svg)\n",
        encoding="utf-8",
    )

    problems = check_docs.link_problems(readme, tmp_path)

    assert problems == [
        "README.md: docs/gone.md: no such file",
        "README.md: docs/page.md#three-words: no heading gives that anchor",
        "README.md: docs/missing.svg: no such file",
    ]


def test_github_anchors_drop_punctuation_and_keep_code() -> None:
    markdown = "## `sam local invoke`, for real\n\n## Ordering: the latest version wins\n"

    anchors = check_docs.heading_anchors(markdown)

    assert anchors == {"sam-local-invoke-for-real", "ordering-the-latest-version-wins"}


def test_a_broken_link_in_a_docs_page_fails_the_strict_build(tmp_path: Path) -> None:
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    page = tmp_path / "docs" / "tests.md"
    broken = page.read_text(encoding="utf-8") + "\n[gone](capacity.md#no-such-heading)\n"
    page.write_text(broken, encoding="utf-8")

    problems = check_docs.site_problems(tmp_path / "mkdocs.yml")

    assert any("no-such-heading" in problem for problem in problems), problems


def test_every_path_where_to_change_what_names_exists() -> None:
    architecture = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = architecture[architecture.index("## Where to change what") :]
    spans = re.findall(r"`([^`\s]+)`", section)
    paths = [span for span in spans if "/" in span or re.search(r"\.(py|yaml|yml|json|txt|toml)$", span)]

    assert len(paths) > 15
    assert [path for path in paths if not (ROOT / path).exists()] == []
