"""Who speaks when (``diarize``, ``diarize_model``): the emulator tells voices apart by their pitch.

Nothing tells it the answer. The words are grouped into turns (runs without a pause of
``TURN_GAP_S``); each turn's pitch is the median of its voiced words' (``asr.pitch``); the turns are
split in two where the split leaves the least spread within each side (1-D two-means, exhaustive on
the sorted pitches), and the two sides are two speakers only when their mean pitches differ by
``DISTINCT_RATIO`` or more (a woman's and a man's voice, about 170 and 100 Hz, do; one voice's
intonation does not). Speakers are numbered in order of appearance, from 0, as Deepgram numbers them.

This is far weaker than Deepgram's diarizer: two voices at most, told apart by pitch only, never
within a turn. It is enough to exercise speaker changes end to end, honestly.
"""

from __future__ import annotations

from statistics import median

from localworld.deepgram.asr import Word

TURN_GAP_S = 0.3
DISTINCT_RATIO = 1.25


def turns(words: tuple[Word, ...]) -> list[list[Word]]:
    groups: list[list[Word]] = []
    for word in words:
        if groups and word.start - groups[-1][-1].end < TURN_GAP_S:
            groups[-1].append(word)
        else:
            groups.append([word])
    return groups


def _two_means(values: list[float]) -> float | None:
    """The threshold that splits ``values`` into two groups with the least spread within each, when
    the groups' means are far enough apart to be two voices; None otherwise."""
    ordered = sorted(values)
    total, total_sq, count = sum(ordered), sum(v * v for v in ordered), len(ordered)
    best: tuple[float, int] | None = None
    low, low_sq = 0.0, 0.0
    for cut in range(1, count):  # running sums: linear, whatever the number of turns
        low, low_sq = low + ordered[cut - 1], low_sq + ordered[cut - 1] ** 2
        high, high_sq = total - low, total_sq - low_sq
        spread = (low_sq - low * low / cut) + (high_sq - high * high / (count - cut))
        if best is None or spread < best[0]:
            best = (spread, cut)
    if best is None:
        return None
    cut = best[1]
    low_mean, high_mean = sum(ordered[:cut]) / cut, sum(ordered[cut:]) / (count - cut)
    return (ordered[cut - 1] + ordered[cut]) / 2 if high_mean >= DISTINCT_RATIO * low_mean else None


def diarize(words: tuple[Word, ...]) -> tuple[Word, ...]:
    """The words with their speaker set (0 for all when one voice is heard, or none is voiced)."""
    groups = turns(words)
    pitches = [median(voiced) if (voiced := [w.pitch for w in g if w.pitch > 0]) else 0.0 for g in groups]
    threshold = _two_means([p for p in pitches if p > 0])
    if threshold is None:
        return tuple(w if w.speaker == 0 else w._replace(speaker=0) for w in words)
    sides = [None if p == 0 else p > threshold for p in pitches]
    first = next(side for side in sides if side is not None)
    out: list[Word] = []
    current = 0
    for group, side in zip(groups, sides, strict=True):
        if side is not None:  # an unvoiced turn stays with the voice before it
            current = 0 if side == first else 1
        out.extend(w._replace(speaker=current) for w in group)
    return tuple(out)
