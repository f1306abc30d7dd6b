"""Custom vocabulary on real (synthetic) speech: term accuracy and the rest's WER, without and with it.

    .venv/bin/python benchmarks/vocabulary.py --json [--engine faster-whisper] [--threads 2]

espeak-ng (en-us, 150 words per minute, the test data's `synthesize`) speaks 20 sentences, each holding
one uncommon name or term (TERMS). Whisper base (the test data's checkpoint; by default on the app's
CPU engine, faster-whisper int8) transcribes each twice, language given:

  without  the engine's transcript, through the app's text pipeline with an empty vocabulary
  with     the 20 terms as the engine's prompt, then the pipeline's vocabulary correction

Reported: `term_accuracy_without` / `_with` (share of sentences whose transcript holds the term,
after Whisper's English normalisation, so case and punctuation do not count) and `wer_rest_without`
/ `_with` (word error rate over every other word of the sentences: the term's reference word and
whatever the transcript put in its place are left out of the alignment), plus the two mechanisms
alone (`term_accuracy_prompt_only`, `term_accuracy_correction_only`) and each sentence's transcripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jiwer  # noqa: E402
import numpy as np  # noqa: E402

from app.text import TextOptions, finish  # noqa: E402

# (term, sentence): names and jargon Whisper base gets wrong or spells its own way.
SENTENCES: list[tuple[str, str]] = [
    ("Kubernetes", "Please deploy the new service on Kubernetes before Friday."),
    ("PostgreSQL", "The reports are stored in PostgreSQL on the second server."),
    ("Nguyen", "I had lunch with Nguyen and his sister yesterday."),
    ("Siobhan", "Siobhan will send the slides after the meeting."),
    ("Grafana", "Open the dashboard in Grafana and check the memory graph."),
    ("Terraform", "We describe the whole network in Terraform files."),
    ("Nginx", "The proxy in front of the shop runs Nginx with two workers."),
    ("Ansible", "A short Ansible playbook installs the printer drivers."),
    ("Jupyter", "She wrote the analysis in a Jupyter notebook last night."),
    ("Saoirse", "Saoirse is flying back from Dublin on Monday."),
    ("Okonkwo", "The contract was signed by Doctor Okonkwo this morning."),
    ("Wojciech", "Ask Wojciech whether the invoices have been paid."),
    ("Elasticsearch", "The search box sends every query to Elasticsearch."),
    ("GraphQL", "Our mobile app talks to the server through GraphQL."),
    ("Tailscale", "I reach the office computer over Tailscale from home."),
    ("Svelte", "The new settings page is written in Svelte this time."),
    ("Niamh", "Niamh found the bug in the login form."),
    ("Xiaoming", "Xiaoming booked a table for six people at eight."),
    ("Kafka", "Every order event goes through a Kafka topic first."),
    ("Dagster", "The nightly import job is scheduled with Dagster."),
]
TERMS = [term for term, _ in SENTENCES]


@dataclass
class Row:
    term: str
    reference: str
    without: str
    prompt_only: str
    correction_only: str
    with_vocabulary: str


def synthesize_sentences(workdir: Path) -> list[np.ndarray]:
    """The sentences as 16 kHz float32 audio (espeak-ng, as tests/data/build.py makes its speech)."""
    from tests.data.build import synthesize

    return [synthesize(sentence, "en-us", workdir) for _, sentence in SENTENCES]


def term_found(term: str, hypothesis: str) -> bool:
    from tests.speech import normalize

    return f" {normalize(term)} " in f" {normalize(hypothesis)} "


def rest_errors(term: str, reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, words) over the reference's words other than `term`, after Whisper's normalisation.

    The term becomes one placeholder word in the reference, and in the hypothesis where it was
    recognised; errors on the placeholder and insertions right beside it (a two-word stand-in such as
    "cuber netties" aligns as a substitution plus an insertion) are what the term cost, not the rest.
    """
    from tests.speech import normalize

    mark = "qqtermqq"
    key = normalize(term)
    ref = f" {normalize(reference)} ".replace(f" {key} ", f" {mark} ").split()
    hyp = f" {normalize(hypothesis)} ".replace(f" {key} ", f" {mark} ").split()
    at = ref.index(mark)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp) or "<empty>")
    errors = 0
    for chunk in out.alignments[0]:
        if chunk.type == "insert":
            errors += 0 if chunk.ref_start_idx in (at, at + 1) else chunk.hyp_end_idx - chunk.hyp_start_idx
        elif chunk.type in ("substitute", "delete"):
            span = range(chunk.ref_start_idx, chunk.ref_end_idx)
            errors += len(span) - (at in span)
    return errors, len(ref) - 1


def measure(engine, audios: list[np.ndarray]) -> list[Row]:
    plain, corrected = TextOptions(), TextOptions(vocabulary=tuple(TERMS))
    rows = []
    for (term, sentence), audio in zip(SENTENCES, audios):
        raw = engine.transcribe(audio, language="en").text
        prompted = engine.transcribe(audio, language="en", vocabulary=TERMS).text
        rows.append(Row(term, sentence, finish(raw, "en", plain), finish(prompted, "en", plain),
                        finish(raw, "en", corrected), finish(prompted, "en", corrected)))
    return rows


def summarise(rows: list[Row]) -> dict:
    def accuracy(column: str) -> float:
        return round(sum(term_found(r.term, getattr(r, column)) for r in rows) / len(rows), 3)

    def rest_wer(column: str) -> float:
        errors = words = 0
        for r in rows:
            e, n = rest_errors(r.term, r.reference, getattr(r, column))
            errors, words = errors + e, words + n
        return round(errors / words, 4)

    return {
        "sentences": len(rows),
        "term_accuracy_without": accuracy("without"),
        "term_accuracy_with": accuracy("with_vocabulary"),
        "term_accuracy_prompt_only": accuracy("prompt_only"),
        "term_accuracy_correction_only": accuracy("correction_only"),
        "wer_rest_without": rest_wer("without"),
        "wer_rest_with": rest_wer("with_vocabulary"),
        "wer_rest_prompt_only": rest_wer("prompt_only"),
    }


def load(engine_name: str):
    from app.engine import EngineSpec, load_engine
    from tests.data import WHISPER_BASE, WHISPER_BASE_CT2

    model = WHISPER_BASE_CT2 if engine_name == "faster-whisper" else WHISPER_BASE
    return load_engine(EngineSpec(engine=engine_name, model=str(model), device="cpu"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("faster-whisper", "whisper"), default="faster-whisper")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    import torch

    from benchmarks.machine import machine_info

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        audios = synthesize_sentences(Path(tmp))
    rows = measure(load(args.engine), audios)
    result = {"engine": args.engine, "model": "whisper-base", **summarise(rows), "machine": machine_info(),
              "rows": [r.__dict__ for r in rows]}
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
    else:
        for r in rows:
            print(f"{r.term:14} | {r.without} | {r.with_vocabulary}")
        print({k: v for k, v in result.items() if k not in ("rows", "machine")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
