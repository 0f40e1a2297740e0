# hive_train.py
import sys

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from basinvcs import Repository
from basinvcs.hive.trainer import HiveTrainer, HttpTransport
from basinvcs.model.registry import load_substrate
from basinvcs.model.texttasks import accuracy, encode, head_slices, make_text_task
from basinvcs.model.train import BasinModel, logits_of

torch.set_num_threads(1)  # one thread per training process was fastest on 2 cores
name, steps = sys.argv[1], int(sys.argv[2])
task, head = make_text_task(name), head_slices()[name]
substrate = load_substrate("minilm-cls")
tokenizer = AutoTokenizer.from_pretrained(substrate.path)


def logits(model, inputs):
    return logits_of(model(**inputs))[:, head]


with Repository.open() as repo:  # joined: it knows the coordinator's URL and key
    model = BasinModel(substrate, repo.config.chart)
    hive = HiveTrainer(model, HttpTransport.joined(repo), repo.identity(), samples_per_step=16)
    before = accuracy(lambda inputs: logits(model, inputs), task, tokenizer)  # at the hive's head
    opt = torch.optim.Adam([model.z], lr=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        sentences, labels = task.batch(16, generator)
        loss = F.cross_entropy(logits(model, encode(tokenizer, sentences)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hive.step()  # send the change as a signed update, wait for the round, go on from its head
    hive.finish()
    after = accuracy(lambda inputs: logits(model, inputs), task, tokenizer)
print(
    f"{name}: {hive.steps} steps in {len(hive.history)} rounds, {hive.bytes_sent:,} bytes sent; "
    f"held-out accuracy {before:.3f} -> {after:.3f}"
)
