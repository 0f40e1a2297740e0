# train.py
import sys

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from basinvcs import Repository
from basinvcs.model.registry import load_substrate
from basinvcs.model.texttasks import (
    accuracy,
    encode,
    generic_sentences,
    head_slices,
    make_text_task,
    sentence_features,
)
from basinvcs.model.train import (
    Anchor,
    BasinModel,
    commit_model_in_basin,
    fisher_diagonal,
    logits_of,
    train,
)

torch.set_num_threads(1)  # one thread per training process was fastest on 2 cores
name = sys.argv[1]
task, head = make_text_task(name), head_slices()[name]
substrate = load_substrate("minilm-cls")
tokenizer = AutoTokenizer.from_pretrained(substrate.path)


def logits(model, inputs):
    return logits_of(model(**inputs))[:, head]


def loss(model, batch):
    sentences, labels = batch
    return F.cross_entropy(logits(model, encode(tokenizer, sentences)), labels)


with Repository.open() as repo:
    model = BasinModel(substrate, repo.config.chart)
    # an anchor holds the model's features on random-word sentences where the base had them:
    # the specialist changes little besides its skill, so merges add skills up (docs/results.md)
    generic = generic_sentences(tokenizer, 512)
    anchor = Anchor(model, generic, sentence_features(tokenizer), weight=1.0, batch=8)
    train(model, task, 120, 0.05, 32, seed=0, loss_fn=loss, weight_decay=0.3, anchor=anchor)
    acc = accuracy(lambda inputs: logits(model, inputs), task, tokenizer)
    batches = [task.batch(8, torch.Generator().manual_seed(i)) for i in range(16)]
    fisher = fisher_diagonal(model, batches, loss)
    commit_model_in_basin(repo, model, f"{name} specialist: held-out accuracy {acc:.3f}", fisher)
print(f"{name}: held-out accuracy {acc:.3f}, chance {1 / len(task.labels):.2f}")
