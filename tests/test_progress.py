import io
import sys

import pytest

from basinvcs import progress
from basinvcs.errors import BasinError
from basinvcs.progress import progress_bar, render


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def fake_terminal(monkeypatch) -> FakeTerminal:
    """Stand in for a terminal; called in the test body, after pytest installs its capture."""
    stream = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def run_bar(total: int = 3 * 1024**2) -> None:
    with progress_bar(total, "writing") as update:
        for _ in range(3):
            update(1024**2)


def test_auto_draws_on_a_terminal(monkeypatch):
    terminal = fake_terminal(monkeypatch)
    monkeypatch.delenv("BASIN_PROGRESS", raising=False)
    run_bar()
    out = terminal.getvalue()
    assert out.startswith("\rwriting   0% 0 B/3.0 MiB")
    assert out.endswith("\n") and out.count("\n") == 1
    assert "writing 100% 3.0 MiB/3.0 MiB" in out.splitlines()[-1].split("\r")[-1]


def test_auto_is_silent_off_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("BASIN_PROGRESS", "auto")
    run_bar()
    assert capsys.readouterr() == ("", "")


def test_never_is_silent_even_on_a_terminal(monkeypatch):
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setenv("BASIN_PROGRESS", "never")
    run_bar()
    assert terminal.getvalue() == ""


def test_always_draws_off_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("BASIN_PROGRESS", "always")
    run_bar()
    err = capsys.readouterr().err
    assert "\rwriting" in err and "100%" in err and err.endswith("\n")


def test_redraws_are_throttled_and_the_end_always_shows(monkeypatch):
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setenv("BASIN_PROGRESS", "always")
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 3600.0)
    with progress_bar(1000, "reading", unit="tensors") as update:
        for _ in range(1000):
            update(1)
    out = terminal.getvalue()
    assert out.count("\r") == 2  # the first line and the last
    assert "reading 100% 1000/1000 tensors" in out


def test_an_error_inside_still_ends_the_line(monkeypatch):
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setenv("BASIN_PROGRESS", "always")
    with pytest.raises(RuntimeError), progress_bar(10, "x") as update:
        update(4)
        raise RuntimeError("boom")
    assert terminal.getvalue().endswith("\n")


def test_a_shorter_line_blanks_out_the_longer_one_before_it(monkeypatch):
    terminal = fake_terminal(monkeypatch)
    monkeypatch.setenv("BASIN_PROGRESS", "always")
    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)
    with progress_bar(10, "x", unit="t") as update:
        update(10)
    first, *rest = terminal.getvalue().split("\r")[1:]
    assert all(len(line.rstrip("\n")) >= len(first) for line in rest)


def test_a_bad_mode_is_refused(monkeypatch):
    monkeypatch.setenv("BASIN_PROGRESS", "sometimes")
    with pytest.raises(
        BasinError, match="BASIN_PROGRESS is 'sometimes'; use auto, always or never"
    ):
        run_bar()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ((0, 2 * 1024**3, "B", 0.0), "w   0% 0 B/2.0 GiB"),
        ((1024**3, 2 * 1024**3, "B", 4.0), "w  50% 1.0 GiB/2.0 GiB 256.0 MiB/s ETA 0:04"),
        ((500, 500, "B", 2.0), "w 100% 500 B/500 B 250 B/s in 0:02"),
        ((3, 10, "tensors", 3600.0), "w  30% 3/10 tensors 0.0 tensors/s ETA 2:20:00"),
        ((7, 0, "B", 1.0), "w 7 B 7 B/s 0:01"),
        ((12, 0, "blocks", 4.0), "w 12 blocks 3.0 blocks/s 0:04"),
        ((2**60, 2**61, "B", 1.0), "w  50% 1024.0 PiB/2048.0 PiB 1024.0 PiB/s ETA 0:01"),
    ],
)
def test_render(args, line):
    assert render("w", *args) == line
