"""Build the 200 body of ``POST /v1/listen`` in Deepgram's shape."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from localworld.deepgram.asr import Recognition, Word
from localworld.deepgram.options import ListenOptions

# A pause at least this long ends a paragraph (sentences end at ``utt_split``).
PARAGRAPH_GAP_S = 2.0
_ARCHES = ("nova-3", "nova-2", "nova", "enhanced", "base", "whisper")
_MODEL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://localworld.invalid/deepgram-emulator/models")

JSONDict = dict[str, Any]


def model_entry(model: str) -> tuple[str, JSONDict]:
    """A stable uuid and the ``model_info`` entry for a requested model name."""
    arch = next((a for a in _ARCHES if model == a or model.startswith(a + "-")), model)
    tier = model[len(arch) + 1 :] if model.startswith(arch + "-") else "general"
    name = tier if arch == "base" else f"{tier}-{arch}"
    info: JSONDict = {"name": name, "version": "2024-01-01.emulator", "arch": arch}
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
    for index, words in enumerate(recognition.results):
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
    """Group words into runs separated by pauses of at least ``gap`` seconds."""
    groups: list[list[Word]] = []
    for word in words:
        if groups and word.start - groups[-1][-1].end < gap:
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
                text = word.word.capitalize() if position == 0 else word.word
                item["punctuated_word"] = text + "." if position == len(sentence) - 1 else text
            if options.diarize:
                item["speaker"] = 0
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
            entry["speaker"] = 0
            body = f"Speaker 0: {body}"
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
                "speaker": 0,
                "id": str(uuid.uuid4()),
            }
        )
    return out


# What a long recording's answer is made of when the audio itself held no words.
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


def _long_words(heard: tuple[Word, ...], count: int) -> tuple[Word, ...]:
    """``count`` words in sentences and paragraphs, cycling through what was heard."""
    texts = [w.word for w in heard] or list(_FILLER)
    words: list[Word] = []
    clock = 0.0
    for index in range(count):
        if index and index % _WORDS_PER_SENTENCE == 0:
            sentence = index // _WORDS_PER_SENTENCE
            clock += PARAGRAPH_GAP_S + 0.5 if sentence % _SENTENCES_PER_PARAGRAPH == 0 else 1.0
        confidence = 0.8 + (index % 19) / 100
        words.append(Word(texts[index % len(texts)], round(clock, 3), round(clock + 0.3, 3), confidence))
        clock += 0.4
    return tuple(words)


_REQUEST_ID_SLOT = "00000000-0000-4000-8000-000000000000"
_SHA256_SLOT = "f" * 64
_CREATED_SLOT = "1970-01-01T00:00:00.000Z"
_long_answers: dict[tuple[Any, ...], bytes] = {}
_long_answers_lock = threading.Lock()


def long_answer(
    *, request_id: str, sha256: str, recognition: Recognition, options: ListenOptions, least_bytes: int
) -> bytes:
    """A valid 200 body of at least ``least_bytes``, as a long recording gives: the words heard,
    repeated over hours of speech, in every channel, with punctuation, diarization, utterances and
    paragraphs (each word is in the answer twice: in its channel and in its utterance). Built once
    per size, words and options (seconds for 60 MB), then only the request's own values change."""
    heard = recognition.results[0] if recognition.results else ()
    key = (
        least_bytes,
        tuple(w.word for w in heard),
        len(recognition.results),
        recognition.channels,
        options.pairs,
    )
    with _long_answers_lock:
        template = _long_answers.get(key)
        if template is None:
            template = _render_long_answer(heard, recognition, options, least_bytes)
            _long_answers.clear()  # keep one: they are large
            _long_answers[key] = template
    return (
        template.replace(_REQUEST_ID_SLOT.encode(), request_id.encode(), 1)
        .replace(_SHA256_SLOT.encode(), sha256.encode(), 1)
        .replace(_CREATED_SLOT.encode(), iso_now().encode(), 1)
    )


def _render_long_answer(
    heard: tuple[Word, ...], recognition: Recognition, options: ListenOptions, least_bytes: int
) -> bytes:
    options = dataclasses.replace(options, punctuate=True, diarize=True, utterances=True, paragraphs=True)
    channels = max(1, len(recognition.results))

    def render(count: int) -> bytes:
        words = _long_words(heard, count)
        duration = words[-1].end if words else recognition.duration
        stretched = Recognition(duration=duration, channels=recognition.channels, results=(words,) * channels)
        body = build_response(
            request_id=_REQUEST_ID_SLOT, sha256=_SHA256_SLOT, recognition=stretched, options=options
        )
        body["metadata"]["created"] = _CREATED_SLOT
        return json.dumps(body).encode()

    sample = 2000
    per_word = len(render(sample)) / sample
    count = int(least_bytes / per_word * 1.01) + 1
    while True:
        body = render(count)
        if len(body) >= least_bytes:
            return body
        count = int(count * 1.05) + 1
