"""Small generated English classification tasks whose test sentences use only held-out words.

They exist for skill-transfer experiments on a pretrained sentence encoder (all-MiniLM-L6-v2,
BERT-style, uncased): a skill learned from the train split should carry over to sentences built
from content words the training never showed, so test accuracy measures the skill rather than
memorised words. Each task is built so that knowing which words occur is not enough:

    task      labels                  what it takes
    negation  negative, positive      an adjective's polarity flipped by 0, 1 or 2 negations
                                      ("the film was not good", "nobody thought the soup was
                                      not bad"); polarity and negation are each independent of
                                      the label, so no bag of words (linear in counts) solves it
    topic     sports, cooking,        the topic of the main clause, with a second topic mentioned
              weather, finance        in a subordinate clause that comes first or last ("although
                                      someone mentioned the rain, we talked mostly about the
                                      striker"): both topics' words are in every sentence
    agent     first, second           whether the doer of the action is the first or the second
                                      person mentioned, in active, passive and cleft forms; "was",
                                      "by", "had" and "who" occur in both classes

Content words (adjectives and nouns; topic nouns; people and verbs) come in disjoint train and
held-out lists (`CONTENT_WORDS`); the few template words ("the", "was", "not", "although", ...)
are shared. All content words are single wordpieces in the BERT uncased vocabulary.

Splits are a pure function of (task, seed): one `random.Random(seed)` draws a seed for each split
(so the test set does not depend on n_train), and each split's labels are an exactly balanced list
(up to n mod the number of labels), shuffled, with a sentence drawn for each. Only `choice`,
`random`, `getrandbits` and `shuffle` are used, which are stable across Python versions. Sentences
may repeat within a split (the held-out vocabulary is deliberately small); train and test never
share a sentence because they share no content word.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Example = tuple[str, int]  # (sentence, label index)
Sampler = Callable[[random.Random, str, int], str]  # (rng, split, label) -> sentence
SPLITS = ("train", "test")

# ---------------------------------------------------------------------------------------------
# negation: polarity of an adjective, flipped by each negation

_POSITIVE = {
    "train": ("good", "great", "excellent", "wonderful", "nice", "pleasant", "lovely", "amazing",
              "perfect", "brilliant"),
    "test": ("superb", "delightful", "charming", "terrific", "splendid", "awesome", "impressive",
             "fantastic"),
}  # fmt: skip
_NEGATIVE = {
    "train": ("bad", "terrible", "awful", "horrible", "poor", "boring", "dreadful", "ugly", "nasty",
              "dull"),
    "test": ("miserable", "disgusting", "pathetic", "unpleasant", "bland", "annoying",
             "disappointing", "weak"),
}  # fmt: skip
_REVIEWED = {
    "train": ("film", "soup", "hotel", "movie", "book", "meal", "concert", "show", "trip", "party",
              "game", "room"),
    "test": ("play", "album", "restaurant", "dinner", "holiday", "song", "novel", "museum",
             "lecture", "flight", "festival", "garden"),
}  # fmt: skip
# Frames by number of negations; {n} is the thing reviewed, {a} the adjective.
_NEGATION_FRAMES: tuple[tuple[str, ...], ...] = (
    (
        "the {n} was {a}",
        "the {n} was really {a}",
        "the {n} was truly {a}",
        "i thought the {n} was {a}",
        "everyone said the {n} was {a}",
        "the {n} was {a} after all",
    ),
    (
        "the {n} was not {a}",
        "the {n} was never {a}",
        "the {n} was hardly {a}",
        "the {n} was not {a} at all",
        "the {n} was far from {a}",
        "nobody thought the {n} was {a}",
        "i did not think the {n} was {a}",
        "no one said the {n} was {a}",
    ),
    (
        "nobody thought the {n} was not {a}",
        "no one said the {n} was not {a}",
        "it is not true that the {n} was not {a}",
        "i never said the {n} was not {a}",
        "nobody thought the {n} was never {a}",
    ),
)


def _negation(rng: random.Random, split: str, label: int) -> str:
    """label 1 (positive) when the adjective is positive and negated an even number of times, or
    negative and negated once. Adjective polarity is a coin flip independent of the label, and so
    then is whether the sentence holds a negation at all."""
    positive_adjective = rng.random() < 0.5
    adjectives = (_POSITIVE if positive_adjective else _NEGATIVE)[split]
    flipped = positive_adjective != bool(label)
    negations = 1 if flipped else (0 if rng.random() < 0.6 else 2)
    frame = rng.choice(_NEGATION_FRAMES[negations])
    return frame.format(n=rng.choice(_REVIEWED[split]), a=rng.choice(adjectives))


# ---------------------------------------------------------------------------------------------
# topic: the main clause's topic, with a distracting topic in a subordinate clause

_TOPIC_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "sports": {
        "train": ("striker", "goal", "match", "referee", "team", "coach", "stadium", "league",
                  "football", "ball", "player", "tennis"),
        "test": ("soccer", "basketball", "baseball", "hockey", "golf", "athlete", "tournament",
                 "goalkeeper"),
    },
    "cooking": {
        "train": ("soup", "oven", "recipe", "kitchen", "chef", "pasta", "sauce", "bread", "salad",
                  "knife", "butter", "flour"),
        "test": ("garlic", "onion", "cake", "pizza", "rice", "spoon", "cheese", "noodles"),
    },
    "weather": {
        "train": ("rain", "snow", "storm", "wind", "cloud", "forecast", "thunder", "fog", "frost",
                  "temperature", "humidity", "sunshine"),
        "test": ("hail", "rainbow", "lightning", "hurricane", "tornado", "breeze", "blizzard",
                 "flood"),
    },
    "finance": {
        "train": ("bank", "stock", "loan", "market", "profit", "budget", "tax", "investor",
                  "dollar", "debt", "price", "salary"),
        "test": ("money", "credit", "shares", "fund", "mortgage", "inflation", "economy",
                 "currency"),
    },
}  # fmt: skip
TOPICS = tuple(_TOPIC_WORDS)
_MAIN_FRAMES = (
    "the whole story was about the {w}",
    "we talked mostly about the {w}",
    "the meeting was mainly about the {w}",
    "my friend wrote a long letter about the {w}",
    "the news today focused on the {w}",
    "everyone kept asking about the {w}",
)
_ASIDE_FRAMES = (
    "although someone mentioned the {w}",
    "even though the {w} came up once",
    "while a child asked about the {w}",
    "after a short remark on the {w}",
    "though one person joked about the {w}",
    "before a brief word on the {w}",
)


def _topic(rng: random.Random, split: str, label: int) -> str:
    """A main clause on topic `label` and a subordinate aside on another topic, in either order,
    one topic word each: only the clause structure says which topic is the main one."""
    aside_topic = rng.choice([t for i, t in enumerate(TOPICS) if i != label])
    main = rng.choice(_MAIN_FRAMES).format(w=rng.choice(_TOPIC_WORDS[TOPICS[label]][split]))
    aside = rng.choice(_ASIDE_FRAMES).format(w=rng.choice(_TOPIC_WORDS[aside_topic][split]))
    return f"{main} {aside}" if rng.random() < 0.5 else f"{aside}, {main}"


# ---------------------------------------------------------------------------------------------
# agent: is the doer the first or the second person mentioned?

_PEOPLE = {
    "train": ("doctor", "teacher", "lawyer", "nurse", "farmer", "pilot", "student", "soldier",
              "driver", "singer", "artist", "judge"),
    "test": ("baker", "officer", "writer", "manager", "captain", "actor", "priest", "dancer",
             "waiter", "sailor", "neighbor", "king"),
}  # fmt: skip
# (past tense = past participle, present participle): regular verbs, so one form serves both the
# active "had helped" and the passive "was helped".
_VERBS = {
    "train": (("helped", "helping"), ("called", "calling"), ("visited", "visiting"),
              ("watched", "watching"), ("thanked", "thanking"), ("warned", "warning"),
              ("followed", "following"), ("trusted", "trusting"), ("blamed", "blaming"),
              ("praised", "praising"), ("pushed", "pushing"), ("invited", "inviting")),
    "test": (("greeted", "greeting"), ("admired", "admiring"), ("ignored", "ignoring"),
             ("rescued", "rescuing"), ("hired", "hiring"), ("kissed", "kissing"),
             ("hugged", "hugging"), ("attacked", "attacking"), ("chased", "chasing"),
             ("supported", "supporting"), ("insulted", "insulting"), ("paid", "paying")),
}  # fmt: skip
# Frames by label; {a} is the doer, {p} the one done to, {v} the past form, {g} the -ing form.
_AGENT_FRAMES: tuple[tuple[str, ...], ...] = (
    (
        "the {a} {v} the {p}",
        "the {a} was {g} the {p}",
        "the {a} had {v} the {p}",
        "it was the {a} who {v} the {p}",
        "the {a} {v} the {p} by the door",
        "the {a} was the one who {v} the {p}",
    ),
    (
        "the {p} was {v} by the {a}",
        "the {p} got {v} by the {a}",
        "the {p} had been {v} by the {a}",
        "it was the {p} who the {a} {v}",
        "the {p} was the one who the {a} {v}",
        "the {p} was {v} yesterday by the {a}",
    ),
)


def _agent(rng: random.Random, split: str, label: int) -> str:
    """Two different people and one verb; the frame (active or passive-like) fixes whether the
    doer is mentioned first (label 0) or second (label 1)."""
    doer = rng.choice(_PEOPLE[split])
    done_to = rng.choice([p for p in _PEOPLE[split] if p != doer])
    past, ing = rng.choice(_VERBS[split])
    return rng.choice(_AGENT_FRAMES[label]).format(a=doer, p=done_to, v=past, g=ing)


# ---------------------------------------------------------------------------------------------


def _flat(*groups: Mapping[str, tuple[Any, ...]]) -> dict[str, frozenset[str]]:
    """Union of word lists per split; verb pairs contribute both forms."""
    out: dict[str, set[str]] = {s: set() for s in SPLITS}
    for group in groups:
        for split in SPLITS:
            for item in group[split]:
                out[split].update(item if isinstance(item, tuple) else (item,))
    return {s: frozenset(words) for s, words in out.items()}


CONTENT_WORDS: dict[str, dict[str, frozenset[str]]] = {
    "negation": _flat(_POSITIVE, _NEGATIVE, _REVIEWED),
    "topic": _flat(*_TOPIC_WORDS.values()),
    "agent": _flat(_PEOPLE, _VERBS),
}
"""task -> split -> the content words its sentences draw from; train and test lists are disjoint,
everything else in a sentence is a template word shared by both splits."""


@dataclass(frozen=True)
class TextTask:
    """One task's fixed train and test sentences with label indices into `labels`."""

    name: str
    labels: tuple[str, ...]
    train: tuple[Example, ...]
    test: tuple[Example, ...]

    def split(self, name: str) -> tuple[Example, ...]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r} (train or test)")
        return self.train if name == "train" else self.test

    def batch(self, size: int, generator: torch.Generator) -> tuple[list[str], torch.Tensor]:
        """`size` training sentences drawn with replacement and their labels (int64); the
        generator alone fixes which, so a training run is reproducible from its seed."""
        picks = torch.randint(len(self.train), (size,), generator=generator).tolist()
        sentences = [self.train[i][0] for i in picks]
        labels = torch.tensor([self.train[i][1] for i in picks], dtype=torch.int64)
        return sentences, labels


def _build(
    name: str, labels: tuple[str, ...], sampler: Sampler, seed: int, n_train: int, n_test: int
) -> TextTask:
    rng = random.Random(seed)
    split_seeds = {split: rng.getrandbits(64) for split in SPLITS}
    examples: dict[str, tuple[Example, ...]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        split_rng = random.Random(split_seeds[split])
        order = [i % len(labels) for i in range(n)]
        split_rng.shuffle(order)
        examples[split] = tuple((sampler(split_rng, split, label), label) for label in order)
    return TextTask(name, labels, examples["train"], examples["test"])


LABELS: dict[str, tuple[str, ...]] = {
    "negation": ("negative", "positive"),
    "topic": TOPICS,
    "agent": ("first", "second"),
}


def head_slices(names: Sequence[str] = tuple(LABELS)) -> dict[str, slice]:
    """Each task's slice of one shared classifier's logits, tasks side by side in `names` order:
    one head of sum-of-labels outputs lets one model (and a merge of specialists) hold them all."""
    out, start = {}, 0
    for name in names:
        if name not in LABELS:
            raise ValueError(f"unknown text task {name!r} (known: {', '.join(LABELS)})")
        out[name] = slice(start, start + len(LABELS[name]))
        start += len(LABELS[name])
    return out


def _negation_task(seed: int, n_train: int, n_test: int) -> TextTask:
    return _build("negation", LABELS["negation"], _negation, seed, n_train, n_test)


def _topic_task(seed: int, n_train: int, n_test: int) -> TextTask:
    return _build("topic", LABELS["topic"], _topic, seed, n_train, n_test)


def _agent_task(seed: int, n_train: int, n_test: int) -> TextTask:
    return _build("agent", LABELS["agent"], _agent, seed, n_train, n_test)


TEXT_TASKS: dict[str, Callable[[int, int, int], TextTask]] = {
    "negation": _negation_task,
    "topic": _topic_task,
    "agent": _agent_task,
}
"""task name -> (seed, n_train, n_test) -> TextTask."""


def make_text_task(name: str, seed: int = 0, n_train: int = 2000, n_test: int = 400) -> TextTask:
    """The task `name` with its deterministic train/test split for `seed`."""
    try:
        build = TEXT_TASKS[name]
    except KeyError:
        raise ValueError(f"unknown text task {name!r} (known: {', '.join(TEXT_TASKS)})") from None
    return build(seed, n_train, n_test)


def encode(tokenizer: Any, sentences: list[str]) -> dict[str, torch.Tensor]:
    """Padded input_ids and attention_mask (and token_type_ids where the tokenizer makes them).

    The tokenizer is passed in so that this module never imports transformers itself.
    """
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return {key: batch[key] for key in keys if key in batch}


PROBE_STEPS, PROBE_DECAY, PROBE_LR = 300, 1e-3, 1e-2  # full-batch Adam on frozen features


@torch.no_grad()
def _pooled(model: Any, tokenizer: Any, sentences: list[str], chunk: int = 256) -> torch.Tensor:
    """What the classifier of a sequence-classification model reads: the base model's pooled
    output (BERT's pooler), else its last hidden state at the first token."""
    parts = []
    for i in range(0, len(sentences), chunk):
        out = model.base_model(**encode(tokenizer, sentences[i : i + chunk]))
        pooled = getattr(out, "pooler_output", None)
        parts.append(pooled if pooled is not None else out.last_hidden_state[:, 0])
    return torch.cat(parts)


def fit_probe_heads(
    model: Any, tokenizer: Any, names: Sequence[str] = tuple(LABELS), seed: int = 0
) -> None:
    """Set `model.classifier` (a transformers sequence classifier with one head of all tasks'
    labels, `head_slices(names)`) to a linear probe per task, fitted on the frozen model's
    features of that task's training sentences: specialists then start from a working head and
    fine-tune the body, the setting in which merges keep skills (docs/results.md)."""
    model.eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    for name, head in head_slices(names).items():
        task = make_text_task(name, seed=seed)
        features = _pooled(model, tokenizer, [s for s, _ in task.train])
        labels = torch.tensor([y for _, y in task.train])
        w = torch.zeros(head.stop - head.start, features.shape[1], requires_grad=True)
        b = torch.zeros(head.stop - head.start, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=PROBE_LR)
        for _ in range(PROBE_STEPS):
            fit = torch.nn.functional.cross_entropy(features @ w.T + b, labels)
            loss = fit + PROBE_DECAY * w.square().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            model.classifier.weight[head] = w
            model.classifier.bias[head] = b


def generic_sentences(tokenizer: Any, n: int, seed: int = 0) -> list[str]:
    """n strings of 6 to 14 words drawn at random from the tokenizer's vocabulary (whole
    alphabetic words of three letters or more, among its common ids 2,000-12,000): inputs that
    belong to no task, on which a specialist can be kept to compute what the base computed
    (`train.Anchor`). A pure function of (vocabulary, n, seed)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    words = [w for w, i in vocab if 2000 <= i < 12000 and w.isalpha() and len(w) > 2]
    if not words:
        raise ValueError("the tokenizer's vocabulary has no whole words at ids 2,000-12,000")
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) for _ in range(n)]


def sentence_features(tokenizer: Any) -> Callable[[Any, Sequence[str]], torch.Tensor]:
    """features(model, sentences): the last hidden state at the first token ([CLS] for BERT),
    what a sequence-classification head of an encoder reads; for `train.Anchor`."""

    def features(model: Any, sentences: Sequence[str]) -> torch.Tensor:
        out = model(**encode(tokenizer, list(sentences)), output_hidden_states=True)
        return out.hidden_states[-1][:, 0]

    return features


@torch.no_grad()
def accuracy(
    logits_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    task: TextTask,
    tokenizer: Any,
    split: str = "test",
    chunk: int = 256,
) -> float:
    """Fraction of `split` whose argmax label is right; logits_fn maps encode()'s dict for n
    sentences to (n, len(task.labels)) logits. Sentences go through in chunks to bound memory."""
    examples = task.split(split)
    right = 0
    for start in range(0, len(examples), chunk):
        part = examples[start : start + chunk]
        logits = logits_fn(encode(tokenizer, [s for s, _ in part]))
        truth = torch.tensor([label for _, label in part], dtype=torch.int64)
        right += int((logits.argmax(-1).cpu() == truth).sum())
    return right / len(examples)
