"""Plots are written as PNG files (atomically) and accept NaN/None gracefully."""

from mrdkit import plots


def test_all_plot_kinds_write_png(tmp_path):
    outs = [
        plots.histogram([1e-5, 2e-5, 3e-4, float("nan")], tmp_path / "h.png", title="MRD", xlabel="MRD", log=True),
        plots.scatter([1, 2, 3], [3, 1, 2], tmp_path / "s.png", title="t", xlabel="x", ylabel="y", marked=[0, 1, 0]),
        plots.lines({"a": ([1, 2], [0.1, 0.2])}, tmp_path / "l.png", title="t", xlabel="K", ylabel="rho",
                    bands={"a": [0.01, 0.02]}),
        plots.bars({"ga": {"random": 0.1, "cga": 0.2}}, tmp_path / "b.png", title="t", ylabel="v",
                   errors={"ga": {"random": 0.01, "cga": 0.02}}),
    ]
    for path in outs:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png", "h.png", "l.png", "s.png"]
