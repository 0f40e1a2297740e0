"""Generated tasks: deterministic disjoint splits, answers by their rule, masks on answers only."""

import pytest
import torch

from basinvcs.model.tasks import CIPHER, TASKS, Task, make_task

RULES = {
    "cipher": lambda w: "".join(CIPHER[c] for c in w),
    "reverse": lambda w: w[::-1],
    "sort": lambda w: "".join(sorted(w)),
    "copy": lambda w: w,
}


@pytest.fixture(scope="module")
def tasks() -> dict[str, Task]:
    return {name: make_task(name, seed=3, n_train=300, n_test=100) for name in TASKS}


def test_at_least_three_tasks_with_distinct_markers(tasks):
    assert len(TASKS) >= 3 and set(RULES) == set(TASKS)
    markers = {name: {p[-1] for p, _ in t.train + t.test} for name, t in tasks.items()}
    assert all(len(m) == 1 for m in markers.values())
    assert len({m.pop() for m in markers.values()}) == len(TASKS)


def test_splits_are_deterministic_and_depend_on_the_seed(tasks):
    for name, task in tasks.items():
        again = make_task(name, seed=3, n_train=300, n_test=100)
        assert again == task
        other = make_task(name, seed=4, n_train=300, n_test=100)
        assert other.train != task.train


def test_train_and_test_are_disjoint_and_follow_the_rule(tasks):
    for name, task in tasks.items():
        assert len(task.train) == 300 and len(task.test) == 100
        prompts = [p for p, _ in task.train + task.test]
        assert len(set(prompts)) == len(prompts)  # distinct within and across splits
        for prompt, answer in task.train + task.test:
            word = prompt[:-1].decode()
            assert 3 <= len(word) <= 5
            assert answer == RULES[name](word).encode() + b"\n"
            assert len(prompt) + len(answer) - 1 <= 128  # tiny's context


def test_mask_marks_exactly_the_answer_bytes(tasks):
    task = tasks["reverse"]
    examples = list(task.test[:20])
    inputs, targets, mask = task.encode(examples)
    assert inputs.shape == targets.shape == mask.shape
    for i, (prompt, answer) in enumerate(examples):
        seq = list(prompt + answer)
        n = len(seq) - 1
        assert inputs[i, :n].tolist() == seq[:-1]
        assert targets[i, :n].tolist() == seq[1:]
        assert targets[i][mask[i]].tolist() == list(answer)  # masked targets are the answer
        assert not mask[i, : len(prompt) - 1].any() and not mask[i, n:].any()


def test_batches_are_drawn_from_train_by_the_generator(tasks):
    task = tasks["sort"]
    a = task.batch(16, torch.Generator().manual_seed(5))
    b = task.batch(16, torch.Generator().manual_seed(5))
    c = task.batch(16, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    train_inputs = {bytes(p + ans)[:-1] for p, ans in task.train}
    for row in a[0].tolist():
        assert bytes(v for v in row if v) in train_inputs


def oracle(task: Task, wrong_last: bool = False):
    """Logits that predict every target of the task's examples (optionally the last one wrong)."""
    truth = {(p + a)[:-1]: list((p + a)[1:]) for p, a in task.train + task.test}

    def logits_fn(inputs: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*inputs.shape, 256)
        for i, row in enumerate(inputs.tolist()):
            target = truth[bytes(v for v in row if v)]
            if wrong_last:
                target[-1] = (target[-1] + 1) % 256
            out[i, torch.arange(len(target)), torch.tensor(target)] = 1.0
        return out

    return logits_fn


def test_accuracy_counts_whole_answers_or_tokens(tasks):
    task = tasks["cipher"]
    assert task.accuracy(oracle(task)) == 1.0
    assert task.accuracy(oracle(task), "train", per_token=True) == 1.0
    assert task.accuracy(oracle(task, wrong_last=True)) == 0.0  # the newline is scored too
    answer_bytes = sum(len(a) for _, a in task.test)
    expected = (answer_bytes - len(task.test)) / answer_bytes
    assert task.accuracy(oracle(task, wrong_last=True), per_token=True) == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown split"):
        task.accuracy(oracle(task), "validation")


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task"):
        make_task("nope")
