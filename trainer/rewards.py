"""Reward models, chosen with `--reward`. Each scores a whole response with one number.

Both run on the device from token ids (lookup tables, no decoding), so computing the reward
does not force a device→host sync in the training step.

- `exclaim`: the seed's reward model that "loves exclamation marks!!!": +weight per "!" in
  the run of "!" that ends the response ("… is happy ! ! !" scores 3). The reference writes
  "!" only as an occasional end mark, never twice, so with no KL penalty the policy learns to
  keep shouting instead of stopping, the run of "!" grows step after step and KL climbs
  without levelling off (until the 20-token limit is all "!").
- `sentiment`: a lexicon score of the sentence (prompt + response), in [−1, 1], but only for
  a well-formed sentence of the grammar that ends with <eos>; anything else scores −1. The
  validity gate stops word salad ("good good good") from buying reward: the policy must
  still write grammatical text, it may only prefer the kinder words.

A Hugging Face policy (`--model`) has its own tokenizer, so it gets the same two rewards on
decoded text (`TEXT_REWARDS`), or a local reward model (`hf.SequenceClassifierReward`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

import torch

from trainer import grammar

REWARDS = ("exclaim", "sentiment")

# Word polarity for the sentiment lexicon; words not listed are neutral (0).
LEXICON: dict[str, float] = {
    **dict.fromkeys(grammar.ADJ_POSITIVE, 1.0),
    **dict.fromkeys(grammar.ADJ_NEGATIVE, -1.0),
    **dict.fromkeys(grammar.VERB_POSITIVE, 1.0),
    **dict.fromkeys(grammar.VERB_NEGATIVE, -1.0),
}
INVALID_SCORE = -1.0


class RewardModel(Protocol):
    def __call__(
        self, prompts: torch.Tensor, responses: torch.Tensor, response_mask: torch.Tensor
    ) -> torch.Tensor:
        """prompts [B, P] (starting with <bos>), responses [B, T] (<pad> after <eos>),
        response_mask [B, T] (1.0 on real response tokens incl. <eos>) -> scores [B]."""
        ...


class ExclaimReward:
    def __init__(self, device: torch.device, weight: float = 1.0) -> None:
        self.weight = weight

    def __call__(
        self, prompts: torch.Tensor, responses: torch.Tensor, response_mask: torch.Tensor
    ) -> torch.Tensor:
        # Length of the trailing run of "!" before <eos> (or before the end when truncated):
        # walk right to left; a token extends the run only if everything after it did.
        marks = (responses == grammar.EXCLAIM_ID) & (response_mask > 0)
        tail = (responses == grammar.EOS_ID) | (response_mask == 0)  # <eos> and padding
        run = torch.zeros_like(responses[:, 0], dtype=torch.float32)
        in_run = torch.ones_like(marks[:, 0])
        for t in reversed(range(responses.shape[1])):
            skip = tail[:, t] & in_run & (run == 0)  # still right of the last word
            in_run = in_run & (marks[:, t] | skip)
            run = run + (in_run & marks[:, t]).float()
        return self.weight * run


class SentimentReward:
    def __init__(self, device: torch.device) -> None:
        table, self.start, self.accept = grammar.transition_table()
        self.table = torch.tensor(table, dtype=torch.long, device=device)
        polarity = [LEXICON.get(word, 0.0) for word in grammar.VOCAB]
        self.polarity = torch.tensor(polarity, dtype=torch.float32, device=device)
        self.sentiment_word = self.polarity != 0

    def valid(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """[B] bool: prompt + response is one grammar sentence followed by <eos>."""
        tokens = torch.cat([prompts[:, 1:], responses], dim=1)  # drop <bos>
        state = torch.full((tokens.shape[0],), self.start, dtype=torch.long, device=tokens.device)
        for t in range(tokens.shape[1]):  # run the grammar's DFA over all rows at once
            state = self.table[state, tokens[:, t]]
        return state == self.accept

    def __call__(
        self, prompts: torch.Tensor, responses: torch.Tensor, response_mask: torch.Tensor
    ) -> torch.Tensor:
        valid = self.valid(prompts, responses)
        tokens = torch.cat([prompts[:, 1:], responses], dim=1)
        n_words = self.sentiment_word[tokens].float().sum(-1)
        score = self.polarity[tokens].sum(-1) / n_words.clamp_min(1)
        return torch.where(valid, score, torch.full_like(score, INVALID_SCORE))


def make_reward(name: str, device: torch.device) -> RewardModel:
    if name == "exclaim":
        return ExclaimReward(device)
    if name == "sentiment":
        return SentimentReward(device)
    raise ValueError(f"unknown reward {name!r}; choose from {REWARDS}")


# -- the same rewards on text (Hugging Face policies) ---------------------------------------


def exclaim_text(prompt: str, response: str, finished: bool) -> float:
    """`exclaim` on text: the number of "!" in the run of "!" (spaces allowed) ending it."""
    return float(response[len(response.rstrip("! \t\n")) :].count("!"))


def sentiment_text(prompt: str, response: str, finished: bool) -> float:
    """`sentiment` on text: the lexicon mean of a finished, well-formed grammar sentence."""
    words = re.findall(r"[a-z']+|[.!]", f"{prompt} {response}".lower())
    if not finished or not grammar.is_sentence(words):
        return INVALID_SCORE
    polarity = [LEXICON[w] for w in words if w in LEXICON]
    return sum(polarity) / max(1, len(polarity))


# (prompt text, response text, ended with <eos>) -> score
TEXT_REWARDS: dict[str, Callable[[str, str, bool], float]] = {
    "exclaim": exclaim_text,
    "sentiment": sentiment_text,
}
