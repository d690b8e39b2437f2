"""``redact=``: the emulator's stand-in for Deepgram's redaction, applied to the recognised words
before any transcript, paragraph or utterance is built from them (as Deepgram's answer carries only
the redacted text).

Deepgram finds entities with models; the emulator knows pocketsphinx's lowercase words, so it
finds few kinds, on purpose plainly: runs of spoken numbers (``numbers``/``true``: three or more
in a row, Deepgram's documented rule; ``aggressive_numbers``: any; ``pci`` and ``pii``: three or
more, as card, account and social security numbers), a short list of given names (``pii``) and of
conditions and drugs (``phi``). A redacted run becomes one word, ``[KIND_n]`` (numbered per kind in
order), spanning the run's time. Deepgram's exact placeholder spelling is not documented the same
way everywhere; the pipeline never parses it, it only carries the text.
"""

from __future__ import annotations

from collections.abc import Iterable

from localworld.deepgram.asr import Word

# fmt: off
_NUMBER_WORDS = frozenset({
    "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    "hundred", "thousand", "million", "billion",
})
_NAMES = frozenset({
    "john", "mary", "james", "robert", "michael", "william", "david", "richard", "joseph", "thomas",
    "linda", "patricia", "jennifer", "elizabeth", "susan", "sarah", "karen", "nancy", "lisa",
    "alice", "bob", "anna", "maria", "peter", "paul",
})
_CONDITIONS = frozenset({
    "asthma", "diabetes", "cancer", "flu", "influenza", "pneumonia", "hypertension", "arthritis",
    "migraine", "depression", "insulin", "aspirin", "ibuprofen", "penicillin", "morphine",
})
# fmt: on
# What each redact value finds: (kind, the shortest run of number words it redacts or None).
_NUMBER_RUNS = {"numbers": 3, "true": 3, "aggressive_numbers": 1, "pci": 3, "pii": 3, "ssn": 3}


def _word_kind(word: str, redact: frozenset[str]) -> str | None:
    if word in _NAMES and "pii" in redact:
        return "NAME"
    if word in _CONDITIONS and "phi" in redact:
        return "CONDITION"
    return None


def redact_words(words: Iterable[Word], values: Iterable[str]) -> tuple[Word, ...]:
    """The words with what ``values`` (the request's ``redact`` options) asks for replaced."""
    redact = frozenset(values) - {"false"}
    words = tuple(words)
    if not redact:
        return words
    shortest = min((_NUMBER_RUNS[v] for v in redact if v in _NUMBER_RUNS), default=None)
    counts: dict[str, int] = {}
    out: list[Word] = []

    def placeholder(kind: str, run: list[Word]) -> Word:
        counts[kind] = counts.get(kind, 0) + 1
        confidence = min(word.confidence for word in run)
        # The placeholder is said by whoever began the run (diarization happens first).
        return run[0]._replace(word=f"[{kind}_{counts[kind]}]", end=run[-1].end, confidence=confidence)

    index = 0
    while index < len(words):
        run: list[Word] = []
        while index + len(run) < len(words) and words[index + len(run)].word in _NUMBER_WORDS:
            run.append(words[index + len(run)])
        if shortest is not None and len(run) >= shortest:
            out.append(placeholder("NUMBER", run))
            index += len(run)
            continue
        word = words[index]
        kind = _word_kind(word.word, redact)
        out.append(word if kind is None else placeholder(kind, [word]))
        index += 1
    return tuple(out)
