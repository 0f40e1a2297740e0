"""Two processes committing to one branch at once never lose a commit."""

import subprocess
import sys
import textwrap

from basinvcs import porcelain
from basinvcs.repository import Repository

WORKER = textwrap.dedent(
    """
    import sys
    from basinvcs import porcelain
    from basinvcs.objects import Basin, Chart
    from basinvcs.repository import Repository

    tag, count = sys.argv[1], int(sys.argv[2])
    for i in range(count):
        with Repository.open(sys.argv[3]) as repo:
            z = [0.0] * 64
            z[i % 64] = float(i + 1)
            z[63 - (hash(tag) % 32)] += 0.5 if tag == "a" else -0.5
            porcelain.commit(repo, Basin.create(Chart(seed=7, dim=64), z), f"{tag} {i}")
    """
)


def test_two_processes_fifty_commits_each(repo_dir):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, tag, "50", str(repo_dir)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    with Repository.open(repo_dir) as repo:
        messages = [c.message for _, c in porcelain.log(repo)]
        report = porcelain.verify(repo)
    assert report.ok, report.problems
    assert len(messages) == 101  # 100 commits and genesis, all on one line of history
    assert {m for m in messages if m != "genesis"} == {f"{t} {i}" for t in "ab" for i in range(50)}


def test_a_process_killed_mid_commit_leaves_a_repository_that_verifies(repo_dir):
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, "a", "100000", str(repo_dir)], stderr=subprocess.PIPE
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Repository.open(repo_dir) as repo:
        report = porcelain.verify(repo)
        count = sum(1 for _ in porcelain.log(repo))
    assert report.ok, report.problems
    assert count > 2  # it had committed before it died, and what it committed is intact


def test_one_repository_shared_by_worker_threads(repo_dir):
    """A server's workers share one Repository: each thread gets its own database connection
    and transactions, so their commits serialise and none is lost, while others read."""
    import threading

    from basinvcs.objects import Basin, Chart

    errors: list[BaseException] = []
    with Repository.open(repo_dir) as repo:

        def writer(k: int) -> None:
            try:
                for i in range(20):
                    z = [0.0] * 64
                    z[(k * 20 + i) % 64] = float(k * 100 + i + 1)
                    porcelain.commit(repo, Basin.create(Chart(seed=7, dim=64), z), f"w{k} {i}")
            except BaseException as exc:  # noqa: BLE001  (reported below, in the main thread)
                errors.append(exc)

        def reader() -> None:
            try:
                for _ in range(20):
                    list(porcelain.log(repo))
                    porcelain.status(repo)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        threads += [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        messages = [c.message for _, c in porcelain.log(repo)]
        assert len(messages) == 81 and len(set(messages)) == 81  # 80 commits and genesis
        assert porcelain.verify(repo).ok
