# use.py
import sys

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from basinvcs.model.texttasks import accuracy, head_slices, make_text_task

folder = sys.argv[1]
model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
for name, head in head_slices().items():
    task = make_text_task(name)
    acc = accuracy(lambda inputs, head=head: model(**inputs).logits[:, head], task, tokenizer)
    print(f"{name}: held-out accuracy {acc:.3f}")
