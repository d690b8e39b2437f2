"""The documentation's deployment recipes keep least privilege: a recipe people copy is part of the stack."""

from __future__ import annotations

import re
import shlex

from tests.docs import documentation


def _commands(name: str) -> list[list[str]]:
    """Every ``aws ...`` command of the docs whose words start with ``name``, line continuations joined."""
    text = documentation().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if line.strip().startswith(name):
            found.append(shlex.split(re.sub(r"<[^>]*>", "X", line.strip())))
    return found


def _option(words: list[str], option: str) -> str | None:
    return words[words.index(option) + 1] if option in words else None


def test_the_sns_recipe_lets_only_one_topic_of_one_account_invoke_the_function() -> None:
    [permission] = [words for words in _commands("aws lambda add-permission") if "sns.amazonaws.com" in words]

    assert _option(permission, "--action") == "lambda:InvokeFunction"
    source_arn = _option(permission, "--source-arn")
    assert source_arn is not None
    assert source_arn.startswith("arn:aws:sns:"), "the permission must name the topic"
    assert "*" not in source_arn
    assert _option(permission, "--source-account") is not None, "and the topic's account"
