"""Rewards: exclaim counts "!" in the response; sentiment needs a well-formed sentence."""

from __future__ import annotations

import random

import torch

from trainer import grammar
from trainer.rewards import INVALID_SCORE, ExclaimReward, SentimentReward, make_reward

CPU = torch.device("cpu")


def _batch(texts: list[tuple[str, str]], width: int = 12) -> tuple[torch.Tensor, ...]:
    """(prompt, response-with-<eos>) strings -> prompts, padded responses, mask."""
    prompts, responses, masks = [], [], []
    for prompt, response in texts:
        prompts.append([grammar.BOS_ID, *grammar.encode(prompt.split())])
        ids = grammar.encode(response.split())
        responses.append(ids + [grammar.PAD_ID] * (width - len(ids)))
        masks.append([1.0] * len(ids) + [0.0] * (width - len(ids)))
    return torch.tensor(prompts), torch.tensor(responses), torch.tensor(masks)


def test_exclaim_scores_the_trailing_run_of_marks() -> None:
    p, r, m = _batch(
        [
            ("the cat", "is happy . <eos>"),
            ("the cat", "is happy ! ! ! <eos>"),
            ("a dog", "! ! ! ! ! ! ! ! ! ! ! !"),  # truncated: all 12 count
            ("a dog", "! sees ! <eos>"),  # only the final run counts
            ("a dog", "! ! sees a cat . <eos>"),
        ]
    )
    r[0, 6] = grammar.EXCLAIM_ID  # a "!" outside the mask (after <eos>) does not count
    assert ExclaimReward(CPU)(p, r, m).tolist() == [0.0, 3.0, 12.0, 1.0, 0.0]


def test_sentiment_scores_valid_sentences_by_lexicon() -> None:
    p, r, m = _batch(
        [
            ("the happy", "dog loves my kind cat . <eos>"),  # +1 +1 +1 -> 1
            ("the sad", "dog hates a cruel cat ! <eos>"),  # -1 -1 -1 -> -1
            ("the big", "dog sees a red cat . <eos>"),  # no sentiment words -> 0
            ("a good", "cat is sad . <eos>"),  # +1 -1 -> 0
            ("the happy", "dog is good ."),
        ]
    )
    scores = SentimentReward(CPU)(p, r, m).tolist()
    assert scores[:4] == [1.0, -1.0, 0.0, 0.0]
    assert scores[4] == INVALID_SCORE  # no <eos>: truncated, not a finished sentence


def test_sentiment_cannot_be_bought_with_word_salad() -> None:
    p, r, m = _batch(
        [
            ("the happy", "good good good lovely kind happy ! <eos>"),
            ("the happy", "dog is good . . <eos>"),
            ("the happy", "dog is good ! ! ! <eos>"),
        ]
    )
    assert SentimentReward(CPU)(p, r, m).tolist() == [INVALID_SCORE] * 3


def test_device_automaton_agrees_with_python_recognizer() -> None:
    rng = random.Random(3)
    reward = SentimentReward(CPU)
    texts = []
    for _ in range(200):
        words = grammar.sample_sentence(rng)
        if rng.random() < 0.5:  # corrupt half of them
            i = rng.randrange(len(words))
            words[i] = rng.choice(grammar.VOCAB[3:])
        texts.append(words)
    width = grammar.MAX_SENTENCE_WORDS + 2
    prompts = torch.tensor([[grammar.BOS_ID, *grammar.encode(w[:2])] for w in texts])
    responses = torch.tensor(
        [
            grammar.encode(w[2:]) + [grammar.EOS_ID] + [grammar.PAD_ID] * (width - len(w) + 1)
            for w in texts
        ]
    )
    valid = reward.valid(prompts, responses).tolist()
    assert valid == [grammar.is_sentence(w) for w in texts]
    assert 0 < sum(valid) < len(valid)


def test_factory_rejects_unknown_names() -> None:
    assert isinstance(make_reward("exclaim", CPU), ExclaimReward)
    try:
        make_reward("helpfulness", CPU)
    except ValueError as e:
        assert "unknown reward" in str(e)
    else:
        raise AssertionError("expected ValueError")
