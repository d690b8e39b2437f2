"""Build the 200 body of ``POST /v1/listen`` in Deepgram's shape."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from localworld.deepgram.asr import Recognition, Word
from localworld.deepgram.diarize import diarize
from localworld.deepgram.options import ListenOptions
from localworld.deepgram.redaction import redact_words

# A pause at least this long ends a paragraph (sentences end at ``utt_split``).
PARAGRAPH_GAP_S = 2.0
_ARCHES = ("nova-3", "nova-2", "nova", "enhanced", "base", "whisper")
_MODEL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://localworld.invalid/deepgram-emulator/models")

JSONDict = dict[str, Any]


# What made the words: said where Deepgram names its model (``model_info``'s ``name``), so whatever
# signs the transcript (caption notes, completion events) credits the emulator, never Deepgram.
ENGINE_NAME = "local Deepgram emulator (pocketsphinx), not Deepgram"


def model_entry(model: str) -> tuple[str, JSONDict]:
    """A stable uuid and the ``model_info`` entry for a requested model name: the emulator's name,
    and the architecture (``arch``) of the model it stands in for."""
    arch = next((a for a in _ARCHES if model == a or model.startswith(a + "-")), model)
    info: JSONDict = {"name": ENGINE_NAME, "version": "2024-01-01.emulator", "arch": arch}
    return str(uuid.uuid5(_MODEL_NAMESPACE, model)), info


def iso_now() -> str:
    """Deepgram's ``created``: ISO 8601, milliseconds, ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_response(
    *, request_id: str, sha256: str, recognition: Recognition, options: ListenOptions
) -> JSONDict:
    model_uuid, info = model_entry(options.model)
    metadata: JSONDict = {
        "transaction_key": "deprecated",
        "request_id": request_id,
        "sha256": sha256,
        "created": iso_now(),
        "duration": round(recognition.duration, 6),
        "channels": recognition.channels,
        "models": [model_uuid],
        "model_info": {model_uuid: info},
    }
    if options.tags:
        metadata["tags"] = list(options.tags)
    if options.extra:
        metadata["extra"] = dict(options.extra)
    channels: list[JSONDict] = []
    utterances: list[JSONDict] = []
    for index, heard in enumerate(recognition.results):
        voiced = diarize(heard) if options.diarize else heard  # speakers told apart by pitch
        words = redact_words(voiced, options.redact)  # everything below is built from the redacted words
        channels.append(_channel(words, options))
        if options.utterances:
            utterances.extend(_utterances(words, index, options))
    results: JSONDict = {"channels": channels}
    if options.utterances:
        results["utterances"] = utterances
    return {"metadata": metadata, "results": results}


def _formatted(options: ListenOptions) -> bool:
    # Deepgram turns punctuation on for paragraphs.
    return options.formatted or options.paragraphs


def _split(words: tuple[Word, ...], gap: float) -> list[list[Word]]:
    """Group words into runs separated by pauses of at least ``gap`` seconds or a change of
    speaker (Deepgram's sentences, paragraphs and utterances are one speaker's)."""
    groups: list[list[Word]] = []
    for word in words:
        if groups and word.start - groups[-1][-1].end < gap and word.speaker == groups[-1][-1].speaker:
            groups[-1].append(word)
        else:
            groups.append([word])
    return groups


def _word_dicts(words: list[Word], options: ListenOptions) -> list[JSONDict]:
    """Word objects; punctuation treats each pause-separated run as a sentence."""
    out: list[JSONDict] = []
    for sentence in _split(tuple(words), options.utt_split):
        for position, word in enumerate(sentence):
            item: JSONDict = {
                "word": word.word,
                "start": word.start,
                "end": word.end,
                "confidence": word.confidence,
            }
            if _formatted(options):
                # A redaction placeholder ("[NUMBER_1]") keeps its spelling.
                text = word.word.capitalize() if position == 0 and word.word[:1] != "[" else word.word
                item["punctuated_word"] = text + "." if position == len(sentence) - 1 else text
            if options.diarize:
                item["speaker"] = word.speaker
                item["speaker_confidence"] = 0.9
            out.append(item)
    return out


def _text(items: list[JSONDict], options: ListenOptions) -> str:
    key = "punctuated_word" if _formatted(options) else "word"
    return " ".join(str(item[key]) for item in items)


def _confidence(words: list[Word] | tuple[Word, ...]) -> float:
    return round(sum(w.confidence for w in words) / len(words), 4) if words else 0.0


def _channel(words: tuple[Word, ...], options: ListenOptions) -> JSONDict:
    items = _word_dicts(list(words), options)
    alternative: JSONDict = {
        "transcript": _text(items, options),
        "confidence": _confidence(words),
        "words": items,
    }
    if options.paragraphs:
        alternative["paragraphs"] = _paragraphs(words, options)
    channel: JSONDict = {"alternatives": [alternative]}
    if options.detect_language:
        channel["detected_language"], channel["language_confidence"] = _detected_language(words, options)
    return channel


def _detected_language(words: tuple[Word, ...], options: ListenOptions) -> tuple[str, float]:
    """What language detection reports for a channel: never the ``language`` asked for.

    The recogniser only knows English, so what it heard is English ("en"), as sure as its
    words are; silence is English with no confidence. With ``detect_language=<code>``
    candidates that leave English out, the first candidate is reported, barely.
    """
    among = options.detect_language_among
    if among and not any(c == "en" or c.startswith("en-") for c in among):
        return among[0], 0.01
    confidence = max(0.5, _confidence(words)) if words else 0.0
    return "en", round(confidence, 4)


def _paragraphs(words: tuple[Word, ...], options: ListenOptions) -> JSONDict:
    paragraphs: list[JSONDict] = []
    texts: list[str] = []
    for paragraph in _split(words, PARAGRAPH_GAP_S):
        sentences = []
        for sentence in _split(tuple(paragraph), options.utt_split):
            text = _text(_word_dicts(sentence, options), options)
            sentences.append({"text": text, "start": sentence[0].start, "end": sentence[-1].end})
        entry: JSONDict = {
            "sentences": sentences,
            "num_words": len(paragraph),
            "start": paragraph[0].start,
            "end": paragraph[-1].end,
        }
        body = " ".join(str(s["text"]) for s in sentences)
        if options.diarize:
            entry["speaker"] = paragraph[0].speaker
            body = f"Speaker {paragraph[0].speaker}: {body}"
        paragraphs.append(entry)
        texts.append(body)
    transcript = "\n" + "\n\n".join(texts) if texts else ""
    return {"transcript": transcript, "paragraphs": paragraphs}


def _utterances(words: tuple[Word, ...], channel: int, options: ListenOptions) -> list[JSONDict]:
    out: list[JSONDict] = []
    for run in _split(words, options.utt_split):
        items = _word_dicts(run, options)
        out.append(
            {
                "start": run[0].start,
                "end": run[-1].end,
                "confidence": _confidence(run),
                "channel": channel,
                "transcript": _text(items, options),
                "words": items,
                "speaker": run[0].speaker,
                "id": str(uuid.uuid4()),
            }
        )
    return out


# What a long recording's answer is made of: everyday words, in sentences and paragraphs.
_FILLER = (
    "so",
    "the",
    "quarterly",
    "numbers",
    "look",
    "good",
    "and",
    "we",
    "expect",
    "growth",
    "next",
    "year",
)
_WORDS_PER_SENTENCE = 12
_SENTENCES_PER_PARAGRAPH = 6
_long_results_cache: dict[tuple[int, int, bool], tuple[bytes, float]] = {}
_long_results_lock = threading.Lock()


def _long_words(count: int) -> tuple[Word, ...]:
    """``count`` words in sentences (pauses of 1 s) and paragraphs (pauses of 2.5 s)."""
    words: list[Word] = []
    clock = 0.0
    for index in range(count):
        if index and index % _WORDS_PER_SENTENCE == 0:
            sentence = index // _WORDS_PER_SENTENCE
            clock += PARAGRAPH_GAP_S + 0.5 if sentence % _SENTENCES_PER_PARAGRAPH == 0 else 1.0
        confidence = 0.8 + (index % 19) / 100
        words.append(Word(_FILLER[index % len(_FILLER)], round(clock, 3), round(clock + 0.3, 3), confidence))
        clock += 0.4
    return tuple(words)


def _long_options(detect_language: bool) -> ListenOptions:
    return ListenOptions(
        punctuate=True, diarize=True, utterances=True, paragraphs=True, detect_language=detect_language
    )


def long_results(least_bytes: int, channels: int = 1, detect_language: bool = False) -> tuple[bytes, float]:
    """The ``results`` of a long recording's answer, serialised, at least ``least_bytes`` long, and
    its duration: hours of words in every channel, punctuated and diarized, with utterances and
    paragraphs (each word twice: in its channel and in its utterance). Built once per size (seconds
    for 60 MB on 2 cores; call it ahead to have it ready) and kept (only the last one)."""
    key = (least_bytes, channels, detect_language)
    with _long_results_lock:
        cached = _long_results_cache.get(key)
        if cached is None:
            cached = _render_long_results(least_bytes, channels, _long_options(detect_language))
            _long_results_cache.clear()  # they are large: keep one
            _long_results_cache[key] = cached
    return cached


def _render_long_results(least_bytes: int, channels: int, options: ListenOptions) -> tuple[bytes, float]:
    def render(count: int) -> tuple[bytes, float]:
        words = _long_words(count)
        recognition = Recognition(duration=words[-1].end, channels=channels, results=(words,) * channels)
        body = build_response(request_id="", sha256="", recognition=recognition, options=options)
        return json.dumps(body["results"]).encode(), recognition.duration

    sample = 2000
    per_word = len(render(sample)[0]) / sample
    count = int(least_bytes / per_word * 1.01) + 1
    while True:
        results, duration = render(count)
        if len(results) >= least_bytes:
            return results, duration
        count = int(count * 1.05) + 1


def long_answer(
    *, request_id: str, sha256: str, recognition: Recognition, options: ListenOptions, least_bytes: int
) -> bytes:
    """A valid 200 body of at least ``least_bytes``, as a long recording gives: this request's
    metadata (its request id, the audio's hash, the model, tags, extra) and ``long_results``."""
    channels = max(1, len(recognition.results))
    results, duration = long_results(least_bytes, channels, options.detect_language)
    stretched = Recognition(duration=duration, channels=recognition.channels, results=())
    long_options = dataclasses.replace(
        options, punctuate=True, diarize=True, utterances=True, paragraphs=True
    )
    metadata = build_response(
        request_id=request_id, sha256=sha256, recognition=stretched, options=long_options
    )["metadata"]
    return b'{"metadata": ' + json.dumps(metadata).encode() + b', "results": ' + results + b"}"
