"""The projection arithmetic and argument checks of `benchmarks.projection` (no timing)."""

from __future__ import annotations

import pytest

from benchmarks import projection


def test_projection_uses_first_epoch_and_median_of_the_rest() -> None:
    # The first epoch carries the compilation; later epochs are the steady state.
    assert projection._projection([10.0, 2.0, 3.0, 2.0], 200) == 10.0 + 199 * 2.0
    assert projection._projection([4.0], 5) == 20.0


@pytest.mark.parametrize(("argv", "needle"), [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--parallel", "pmap"], "allowed vmap, sequential"),
])
def test_bad_arguments_are_one_line_errors(argv, needle, capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as exc:
        projection.main([*argv, "--json", str(tmp_path / "p.json")])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()
