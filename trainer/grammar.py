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
    return [rng.choice(DETERMINERS), *(rng.choice(ADJECTIVES) for _ in range(n_adj)),
            rng.choice(NOUNS)]


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


# -- parsing (exact recognizer for the grammar above) -------------------------------------


def _parse_np(words: Sequence[str], i: int) -> int | None:
    if i >= len(words) or words[i] not in DETERMINERS:
        return None
    i += 1
    n_adj = 0
    while i < len(words) and words[i] in ADJECTIVES:
        i += 1
        n_adj += 1
    if n_adj > 2 or i >= len(words) or words[i] not in NOUNS:
        return None
    return i + 1


def _parse_clause(words: Sequence[str], i: int) -> int | None:
    j = _parse_np(words, i)
    if j is None or j >= len(words):
        return None
    if words[j] == "is":
        return j + 2 if j + 1 < len(words) and words[j + 1] in ADJECTIVES else None
    if words[j] not in VERBS:
        return None
    j += 1
    if j < len(words) and words[j] in ADVERBS:
        return j + 1
    return _parse_np(words, j)


def is_sentence(words: Sequence[str]) -> bool:
    """True when `words` is exactly one sentence of the grammar (with its end mark)."""
    i = _parse_clause(words, 0)
    if i is not None and i < len(words) and words[i] == "and":
        i = _parse_clause(words, i + 1)
    return i is not None and i == len(words) - 1 and words[i] in PUNCTUATION
