"""Deepgram's bounds on key terms: at most 100 ``keyterm`` values and 500 tokens in all per request.

Deepgram refuses a request over either bound, after the request was made; this pipeline checks the
query it is about to send and refuses first: at cold start for the stack's options and each profile
(a configuration error naming the setting), per object for what an upload adds (a permanent
``keyterm-limit`` failure record, no Deepgram request).

Deepgram does not publish its tokenizer. Tokens are estimated the way subword tokenizers behave on
English: every word at least one token, long words one per four characters. The estimate is meant
to sit at or above Deepgram's count, so a list it accepts is one Deepgram accepts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from transcriber.errors import ErrorDetails, PermanentError

MAX_TERMS = 100
MAX_TOKENS = 500
CHARS_PER_TOKEN = 4
_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)  # words, and each punctuation mark on its own


def estimated_tokens(term: str) -> int:
    """Tokens one key term takes, estimated from above (see the module's docstring): a run of
    ASCII letters at about four characters a token, any other character a token of its own (BPE
    vocabularies hold few multi-character pieces of non-Latin scripts)."""
    return sum(_piece_tokens(piece) for piece in _PIECES.findall(term))


def _piece_tokens(piece: str) -> int:
    if piece.isascii():
        return max(1, math.ceil(len(piece) / CHARS_PER_TOKEN))
    return len(piece)


@dataclass(frozen=True)
class KeytermCount:
    terms: int
    tokens: int

    @classmethod
    def of(cls, query: Iterable[tuple[str, str]]) -> KeytermCount:
        terms = [value for name, value in query if name == "keyterm"]
        return cls(len(terms), sum(estimated_tokens(term) for term in terms))

    def problem(self) -> str | None:
        """Why Deepgram would refuse these key terms; None when within its bounds."""
        if self.terms > MAX_TERMS:
            return f"{self.terms} key terms; Deepgram takes at most {MAX_TERMS}"
        if self.tokens > MAX_TOKENS:
            return f"key terms of about {self.tokens} tokens; Deepgram takes at most {MAX_TOKENS}"
        return None


def refuse_over_limit(query: Iterable[tuple[str, str]]) -> None:
    """A permanent ``keyterm-limit`` failure when the query's key terms are over Deepgram's bounds."""
    count = KeytermCount.of(query)
    problem = count.problem()
    if problem is not None:
        raise PermanentError(
            ErrorDetails(
                reason="keyterm-limit",
                message=f"{problem} (the stack's options, the folder's profile and the upload's, together)",
                extra={"keyterms": count.terms, "keyterm_tokens_estimate": count.tokens},
            )
        )
