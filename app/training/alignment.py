"""Where each token of a transcript is spoken: CTC forced alignment over the audio slots.

The aligned canvas (`MicroASR(aligned_canvas=True)`) writes each token at the slot where it is
spoken, so the decoder finds a token's sound at a fixed distance instead of having to count the
words before it. The alignment is the best CTC path (Viterbi) through the training-only CTC head's
log-probabilities, with the transcript as the only allowed label sequence.
"""

from __future__ import annotations

import numpy as np

_NEVER = -1e30


def first_slots(log_probs: np.ndarray, tokens: list[int], blank: int) -> list[int] | None:
    """The slot where each token's emission starts on the best CTC path, or None when the tokens
    cannot fit in the slots (CTC needs one slot per token, plus a blank between repeated tokens).

    `log_probs` is (slots, vocabulary) for one clip, already cut to its speech.
    """
    slots, count = log_probs.shape[0], len(tokens)
    repeats = sum(tokens[i] == tokens[i - 1] for i in range(1, count))
    if count == 0 or slots < count + repeats:
        return None
    # States: blank, token 1, blank, token 2, ..., token n, blank.
    labels = np.full(2 * count + 1, blank)
    labels[1::2] = tokens
    states = len(labels)
    may_skip = np.zeros(states, dtype=bool)  # a token may follow the previous token without a blank between
    may_skip[3::2] = labels[3::2] != labels[1:-2:2]
    score = np.full(states, _NEVER)
    score[:2] = log_probs[0, labels[:2]]
    moves = np.zeros((slots, states), dtype=np.int64)  # how many states back each best path came from
    for t in range(1, slots):
        stay = score
        step = np.concatenate([[_NEVER], score[:-1]])
        skip = np.where(may_skip, np.concatenate([[_NEVER, _NEVER], score[:-2]]), _NEVER)
        options = np.stack([stay, step, skip])
        moves[t] = options.argmax(0)
        score = options[moves[t], np.arange(states)] + log_probs[t, labels]
    state = states - 1 if score[-1] >= score[-2] else states - 2
    path = [state]
    for t in range(slots - 1, 0, -1):
        state -= moves[t, state]
        path.append(state)
    first: list[int | None] = [None] * count
    for t, state in enumerate(reversed(path)):
        if state % 2 and first[state // 2] is None:
            first[state // 2] = t
    return first  # type: ignore[return-value]  # every token is on a complete path
