"""A tiny English-like sentence grammar, its vocabulary and a word-level tokenizer.

Nothing can be downloaded, so the starting policy is pretrained on sentences this grammar
generates. The grammar is small enough to parse exactly, which lets the sentiment reward
refuse ill-formed text (the reward cannot be bought with word salad).

    sentence := clause ("and" clause)? END
    clause   := np VERB np | np VERB ADV | np "is" ADJ
    np       := DET ADJ{0,2} NOUN
    END      := "." (usually) | "!" (rarely: the reference knows "!" but seldom uses it)
"""

from __future__ import annotations

import random
from collections.abc import Sequence

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL = (PAD, BOS, EOS)

DETERMINERS = ("the", "a", "my", "your", "our")
NOUNS = ("cat", "dog", "bird", "child", "teacher", "friend", "city", "garden", "song", "book")
ADJ_POSITIVE = ("good", "happy", "kind", "lovely", "bright")
ADJ_NEGATIVE = ("bad", "sad", "cruel", "awful", "gloomy")
ADJ_NEUTRAL = ("big", "small", "old", "red", "quiet")
ADJECTIVES = ADJ_POSITIVE + ADJ_NEGATIVE + ADJ_NEUTRAL
VERB_POSITIVE = ("loves", "likes", "helps")
VERB_NEGATIVE = ("hates", "fears", "hurts")
VERB_NEUTRAL = ("sees", "finds", "follows")
VERBS = VERB_POSITIVE + VERB_NEGATIVE + VERB_NEUTRAL
ADVERBS = ("today", "again", "quickly", "slowly")
FUNCTION_WORDS = ("is", "and")
PUNCTUATION = (".", "!")
EXCLAIM = "!"

VOCAB: tuple[str, ...] = (
    SPECIAL + PUNCTUATION + FUNCTION_WORDS + DETERMINERS + NOUNS + ADJECTIVES + VERBS + ADVERBS
)
TOKEN_ID: dict[str, int] = {word: i for i, word in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID = TOKEN_ID[PAD], TOKEN_ID[BOS], TOKEN_ID[EOS]
EXCLAIM_ID = TOKEN_ID[EXCLAIM]
VOCAB_SIZE = len(VOCAB)

# Longest sentence: 2 clauses × (np 4 + verb + np 4) + "and" + END = 20 words.
MAX_SENTENCE_WORDS = 20
P_EXCLAIM_END = 0.05


def encode(words: Sequence[str]) -> list[int]:
    return [TOKEN_ID[w] for w in words]


def decode(ids: Sequence[int], *, strip_special: bool = True) -> str:
    words = [VOCAB[i] for i in ids]
    if strip_special:
        words = [w for w in words if w not in SPECIAL]
    return " ".join(words)


# -- generation ---------------------------------------------------------------------------


def _noun_phrase(rng: random.Random) -> list[str]:
    n_adj = rng.choices((0, 1, 2), weights=(0.45, 0.4, 0.15))[0]
    return [
        rng.choice(DETERMINERS),
        *(rng.choice(ADJECTIVES) for _ in range(n_adj)),
        rng.choice(NOUNS),
    ]


def _clause(rng: random.Random) -> list[str]:
    kind = rng.choices(("transitive", "adverb", "copula"), weights=(0.6, 0.2, 0.2))[0]
    subject = _noun_phrase(rng)
    if kind == "transitive":
        return [*subject, rng.choice(VERBS), *_noun_phrase(rng)]
    if kind == "adverb":
        return [*subject, rng.choice(VERBS), rng.choice(ADVERBS)]
    return [*subject, "is", rng.choice(ADJECTIVES)]


def sample_sentence(rng: random.Random) -> list[str]:
    words = _clause(rng)
    if rng.random() < 0.3:
        words += ["and", *_clause(rng)]
    words.append(EXCLAIM if rng.random() < P_EXCLAIM_END else ".")
    return words


# -- recognition: one finite-state machine, used by `is_sentence` and (as a table) on device -

# A state is (clause, phase, adjectives so far). The grammar is finite, so this is a DFA;
# `transition_table` compiles it to a [states, vocab] tensor the sentiment reward runs on
# the GPU without bringing tokens to the host.
State = tuple[int, str, int]
START: State = (1, "subj_det", 0)
END: State = (0, "end", 0)  # saw the end mark; expects <eos>
ACCEPT: State = (0, "accept", 0)  # saw <eos>; only <pad> may follow
REJECT: State = (0, "reject", 0)


def transition(state: State, word: str) -> State:
    clause, phase, n_adj = state
    if phase == "subj_det" and word in DETERMINERS:
        return (clause, "subj_np", 0)
    if phase in ("subj_np", "obj_np"):
        if word in ADJECTIVES and n_adj < 2:
            return (clause, phase, n_adj + 1)
        if word in NOUNS:
            return (clause, "verb" if phase == "subj_np" else "clause_end", 0)
    if phase == "verb":
        if word in VERBS:
            return (clause, "obj_or_adv", 0)
        if word == "is":
            return (clause, "is_adj", 0)
    if phase == "obj_or_adv":
        if word in ADVERBS:
            return (clause, "clause_end", 0)
        if word in DETERMINERS:
            return (clause, "obj_np", 0)
    if phase == "is_adj" and word in ADJECTIVES:
        return (clause, "clause_end", 0)
    if phase == "clause_end":
        if word == "and" and clause == 1:
            return (2, "subj_det", 0)
        if word in PUNCTUATION:
            return END
    if phase == "end" and word == EOS:
        return ACCEPT
    if phase == "accept" and word == PAD:
        return ACCEPT
    return REJECT


def is_sentence(words: Sequence[str]) -> bool:
    """True when `words` is exactly one sentence of the grammar (with its end mark)."""
    state = START
    for word in words:
        state = transition(state, word)
    return state == END


def transition_table() -> tuple[list[list[int]], int, int]:
    """The DFA as (table[state][token] -> state, start index, accept index)."""
    index: dict[State, int] = {START: 0}
    frontier = [START]
    while frontier:  # breadth over reachable states
        state = frontier.pop()
        for word in VOCAB:
            nxt = transition(state, word)
            if nxt not in index:
                index[nxt] = len(index)
                frontier.append(nxt)
    table = [[0] * VOCAB_SIZE for _ in index]
    for state, i in index.items():
        table[i] = [index[transition(state, w)] for w in VOCAB]
    return table, index[START], index[ACCEPT]
