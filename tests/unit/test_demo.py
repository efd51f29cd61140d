"""The demo's thread count: the user's OMP_NUM_THREADS wins, else up to two cores (its 5-minute budget)."""

import os

from mrdkit.bench.demo import demo_threads


def test_demo_threads_follow_omp_num_threads_when_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert demo_threads() == 3


def test_demo_threads_use_up_to_two_cores_otherwise(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cores, expected in ((8, 2), (2, 2), (1, 1), (None, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert demo_threads() == expected
