# train.py
import sys

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from basinvcs import Repository
from basinvcs.model.registry import load_substrate
from basinvcs.model.texttasks import accuracy, encode, head_slices, make_text_task
from basinvcs.model.train import (
    BasinModel,
    commit_model_in_basin,
    fisher_diagonal,
    logits_of,
    train,
)

torch.set_num_threads(1)  # one thread per training process was fastest on 2 cores
torch.manual_seed(0)  # dropout
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
    train(model, task, steps=120, lr=0.1, batch_size=32, seed=0, loss_fn=loss)
    acc = accuracy(lambda inputs: logits(model, inputs), task, tokenizer)
    batches = [task.batch(8, torch.Generator().manual_seed(i)) for i in range(16)]
    fisher = fisher_diagonal(model, batches, loss)
    commit_model_in_basin(repo, model, f"{name} specialist: held-out accuracy {acc:.3f}", fisher)
print(f"{name}: held-out accuracy {acc:.3f}, chance {1 / len(task.labels):.2f}")
