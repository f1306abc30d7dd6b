"""How dictations in a row meet: the case of the second one's first word, before and after the join's rule.

    .venv/bin/python benchmarks/sentence_case.py --json [--model base|tiny.en] [--threads 2]

People dictate a sentence in pieces, and each piece is transcribed on its own. This speaks sixteen
sentences in two pieces each (espeak-ng, en-us, 150 words a minute) and sixteen whole sentences in a
row, transcribes every piece alone with the app's Whisper engine on CTranslate2 (language given), and
joins each second piece to the first as the app does where the cursor has not moved
(`Continuation.join`): once with the space alone (before) and once with the case rule too
(app/text/sentence_case.py). Counted in the joined texts:
- `lower_after_stop`: a word in lower case right after a full stop, question or exclamation mark
  ("meeting. and then": always a slip);
- `function_capital_inside`: a capitalised article, pronoun, conjunction or preposition right after a
  word or comma ("Tuesday and They");
- `pieces_starting_lower` / `sentences_starting_lower`: how often the engine began a second half, or a
  whole sentence, in lower case (why the case cannot tell whether the stop before it was wrong);
- `pieces_ending_with_stop`: first halves the engine ended with a full stop (or ? !) although the
  sentence went on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.desktop.continuation import joining_space  # noqa: E402
from app.engine import EngineSpec, load_engine  # noqa: E402
from app.text.sentence_case import _NEVER_NAMES, continue_case  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from tests.data import MODELS_DIR  # noqa: E402
from tests.data.build import synthesize  # noqa: E402

# A sentence said in two pieces, split where a speaker lets go of the key to think.
PIECES = [
    ("Please remind me to call the dentist", "tomorrow morning before work."),
    ("I will be about ten minutes late", "to the meeting with the design team."),
    ("Can you send me the slides", "from last week's presentation?"),
    ("The weather is lovely today", "so let's have lunch outside."),
    ("Thank you for your help", "with the project report and the budget."),
    ("Don't forget to buy milk and bread", "and a few apples on the way home."),
    ("Our flight leaves early on Friday", "so we should pack tonight."),
    ("Let me know when you are free", "to talk about the new budget."),
    ("I think that", "we should move the launch to next month."),
    ("The results look good but", "we still need more data from the second trial."),
    ("When you get a chance", "could you review the pull request I opened yesterday?"),
    ("We met with the client on Tuesday and", "they agreed to extend the contract for another year."),
    ("If the build fails again", "please send me the full log."),
    ("My sister and I", "are driving to the coast this weekend."),
    ("The main problem with this approach is", "that it uses too much memory."),
    ("According to the report", "sales grew by twenty percent last quarter."),
]
# Whole sentences, dictated one after another.
SENTENCES = [
    "Please remind me to call the dentist tomorrow morning.", "I will be about ten minutes late to the meeting.",
    "Can you send me the slides from last week's presentation?", "Thank you for your help with the project report.",
    "Start without me.", "That sounds great.", "We can discuss it tomorrow.", "It was a long day.",
    "Nobody answered the phone.", "Maybe next time.", "Everything is ready for the demo.", "Please call me back.",
    "And then we went home.", "So that is the plan.", "The train was late again.", "Our guests arrive at noon.",
]
_ENDS_WITH_STOP = re.compile(r"(?<!\.)[.!?]$")
_FIRST_WORD = re.compile(r"\s*([A-Za-z]+)")


def slips(joins: list[tuple[str, str]]) -> dict:
    """The two kinds of slip where each pair of texts meets: (text before, text as it went in)."""
    lower = function = 0
    for previous, sent in joins:
        word = _FIRST_WORD.match(sent)
        if word is None:
            continue
        first = word.group(1)
        if _ENDS_WITH_STOP.search(previous.rstrip()):
            lower += first[0].islower()
        elif re.search(r"[\w,]$", previous.rstrip()):
            function += first == first.capitalize() and first.casefold() in _NEVER_NAMES["en"]
    return {"lower_after_stop": lower, "function_capital_inside": function}


def joined(previous: str, text: str, rule: bool) -> tuple[str, str]:
    return previous, joining_space(previous, text) + (continue_case(previous, text, "en") if rule else text)


def run(model: str, threads: int) -> dict:
    engine = load_engine(EngineSpec(engine="faster-whisper", model=str(MODELS_DIR / f"whisper-{model}-ct2"),
                                    device="cpu"))
    with tempfile.TemporaryDirectory() as work:
        say = lambda text: engine.transcribe(synthesize(text, "en-us", Path(work)), language="en").text  # noqa: E731
        halves = [(say(a), say(b)) for a, b in PIECES]
        whole = [say(s) for s in SENTENCES]
    pairs = halves + list(zip(whole, whole[1:]))
    return {
        "model": f"whisper-{model} (CTranslate2 int8)",
        "pairs": len(pairs),
        "before": slips([joined(a, b, rule=False) for a, b in pairs]),
        "after": slips([joined(a, b, rule=True) for a, b in pairs]),
        "pieces_starting_lower": sum(b[:1].islower() for _, b in halves),
        "pieces_ending_with_stop": sum(a.rstrip()[-1:] in ".!?" for a, _ in halves),
        "sentences_starting_lower": sum(s[:1].islower() for s in whole),
        "halves": [{"first": a, "second": b, "joined": a + "".join(joined(a, b, rule=True)[1:])} for a, b in halves],
        "sentences": whole,
        "threads": threads,
        "machine": machine_info(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny.en", "base"), default="base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    result = run(args.model, args.threads)
    print(json.dumps(result, ensure_ascii=False) if args.json else json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
