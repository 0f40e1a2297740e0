# probe.py
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from basinvcs.model.texttasks import fit_probe_heads

torch.set_num_threads(1)
source, out = sys.argv[1], sys.argv[2]
model = AutoModelForSequenceClassification.from_pretrained(
    source, num_labels=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
)
tokenizer = AutoTokenizer.from_pretrained(source)
fit_probe_heads(model, tokenizer)  # one linear probe per task on the frozen base's features
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print(f"wrote {out}: the base with a probe head for each task")
