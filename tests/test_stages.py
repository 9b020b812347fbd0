"""The three shard steps (gcage_fast.scanning.stages) called directly, as another runner would call them: from a
pickled context and shard specs, in order, they give the rows of ``scan``; a batch never spans two shards; pixels
are released as soon as they are scored; the local runner decodes the next shard while it scores this one."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import threading

import pytest

import genimages as gen
from gcage_fast.config import Limits, ScanConfig
from gcage_fast.ingest.prepare import prepare, prepare_failure
from gcage_fast.ingest.workers import SupervisedPool
from gcage_fast.output.outdir import OutputDir
from gcage_fast.scanning import local, session
from gcage_fast.scanning.context import RunContext, ShardSpec
from gcage_fast.scanning.stages import (commit_shard, in_flight, pool_limits, prepare_shard, prepare_shards, score_shard,
                                    take_shard)
from helpers import read_rows

VOLATILE = ("run_id", "scanned_at")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages") / "src"
    for i, (w, h) in enumerate([(300, 300), (900, 500), (150, 120), (460, 700), (240, 260), (520, 330)]):
        gen.save_image(root / f"{i}.jpg", w, h, i)
    gen.zero_byte(root / "empty.jpg")
    gen.not_an_image(root / "bad.jpg")
    return root


def _config(src, out, model, **kw) -> ScanConfig:
    kw = {"workers": 0, "shard_size": 3, "batch_size": 4, "limits": Limits(timeout_s=120.0), **kw}
    return ScanConfig(inputs=(str(src),), output=str(out), model=str(model), **kw)


def _stable(rows):
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows), key=lambda r: r["path"])


@contextlib.contextmanager
def _opened(config):
    """What a runner sets up before the shard steps (gcage_fast.scanning.session), with the engines open."""
    from gcage_fast.engine.factory import create_runners

    setup = session.resolve(config)
    out = OutputDir(config.output)
    refs = session.inputs(config, out)
    pair = create_runners(setup.model, setup.options, setup.backend, config.device, config.threads,
                          config.precision, config.batch_size)
    with pair.base, (pair.head or contextlib.nullcontext()), out:
        yield setup, pair, session.open_run(setup, out, refs, pair, workers=0)


def test_context_and_shard_spec_pickle(tmp_path, tiny_model_dir):
    spec = ShardSpec.from_plan({"shard": 2, "rows": 7, "sha256": "ab" * 32})
    assert pickle.loads(pickle.dumps(spec)) == spec == ShardSpec(2, 7, "ab" * 32)
    ctx = RunContext(config=_config(tmp_path, tmp_path / "out", tiny_model_dir, heatmaps="png", perturb="jpeg:75"),
                     output=str(tmp_path / "out"), run_id="0" * 32, model_id="tiny", model_sha256="1" * 64,
                     backend="ort-cpu", cam_method="gradcam", cam_target="fake", threshold=0.5, top_k=4,
                     full_image=False)
    again = pickle.loads(pickle.dumps(ctx))
    assert again == ctx and again.preview_max > 0 and again.perturbation == ctx.perturbation is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.run_id = "x"  # type: ignore[misc]
    assert in_flight(ctx, 0).window >= 2 and in_flight(ctx, 4).window == 16


def test_three_steps_in_order_give_the_rows_of_scan(src, tmp_path, tiny_model_dir):
    from gcage_fast.scoring.factory import make_scorer

    summary = local.scan(_config(src, tmp_path / "scan", tiny_model_dir, heatmaps="png"))
    assert summary.shards_total == 3

    config = _config(src, tmp_path / "steps", tiny_model_dir, heatmaps="png")
    markers = []
    with _opened(config) as (setup, pair, run):
        # What a distributed runner ships to its tasks: plain pickles, no handle of the runner's.
        ctx = pickle.loads(pickle.dumps(run.ctx))
        specs = pickle.loads(pickle.dumps(run.pending))
        assert [s.shard for s in specs] == [0, 1, 2] and sum(s.rows for s in specs) == 8
        scorer = make_scorer(config, setup.model.spec, pair, ctx.threshold, ctx.top_k)
        with SupervisedPool(0, prepare, prepare_failure, pool_limits(config)) as pool:
            for spec in specs:
                prepared = list(prepare_shard(ctx, spec, pool))
                assert [e.index for e, _ in prepared] == sorted(e.index for e, _ in prepared)
                scored = score_shard(ctx, scorer, spec, prepared)
                assert len(scored.rows) == spec.rows
                markers.append(commit_shard(ctx, scored))
    assert [m["shard"] for m in markers] == [0, 1, 2] and [m["rows"] for m in markers] == [3, 3, 2]
    assert _stable(read_rows(tmp_path / "steps")) == _stable(read_rows(tmp_path / "scan"))
    pngs = lambda out: sorted(p.name for p in out.glob("heatmaps/*/*.png"))  # noqa: E731
    assert pngs(tmp_path / "steps") == pngs(tmp_path / "scan") and len(pngs(tmp_path / "scan")) == 6
    assert sum(m["heatmaps"] for m in markers) == 6
    assert OutputDir(tmp_path / "steps").committed_shards({0: 3, 1: 3, 2: 2}).keys() == {0, 1, 2}


def test_take_shard_refuses_a_stream_that_does_not_match_the_plan():
    from gcage_fast.errors import OutputError

    with pytest.raises(OutputError, match="ended after 1 of its 2"):
        list(take_shard(ShardSpec(0, 2, ""), iter([(0, "e", "p")])))
    with pytest.raises(OutputError, match="plan shard 0 holds 1 inputs"):
        list(take_shard(ShardSpec(0, 2, ""), iter([(0, "e", "p"), (1, "e", "p")])))
    stream = iter([(0, "a", 1), (0, "b", 2), (1, "c", 3)])
    assert list(take_shard(ShardSpec(0, 2, ""), stream)) == [("a", 1), ("b", 2)]
    assert next(stream) == (1, "c", 3)  # nothing taken beyond the shard


class _Recording:
    """Wraps the scan's scorer: records every batch (plan indexes), and checks that the images of earlier batches
    were released by the time the next one is scored."""

    def __init__(self, inner, on_score=None):
        self.inner, self.on_score = inner, on_score
        self.kernel_info = inner.kernel_info
        self.batches: list[list[int]] = []
        self.scored = []

    def score(self, items):
        assert all(p.patches is None and p.image is None and p.preview is None for p in self.scored)
        if self.on_score is not None:
            self.on_score(items)
        self.batches.append([p.index for p in items])
        self.scored.extend(items)
        return self.inner.score(items)


def _record_batches(monkeypatch, on_score=None) -> list[_Recording]:
    made: list[_Recording] = []
    real = local.make_scorer

    def make(*args, **kw):
        made.append(_Recording(real(*args, **kw), on_score))
        return made[-1]

    monkeypatch.setattr(local, "make_scorer", make)
    return made


@pytest.mark.parametrize("batch_size", [1, 4, 10_000])
def test_a_batch_never_spans_two_shards(src, tmp_path, tiny_model_dir, monkeypatch, batch_size):
    made = _record_batches(monkeypatch)
    summary = local.scan(_config(src, tmp_path / "out", tiny_model_dir, heatmaps="png", batch_size=batch_size))
    assert summary.status == {"ok": 6, "error": 2}
    batches = made[0].batches
    scored = [i for b in batches for i in b]
    assert len(scored) == len(set(scored)) == 6 and scored == sorted(scored)  # each image once, in plan order
    assert all(len({i // 3 for i in b}) == 1 for b in batches), batches  # plan index // shard size = shard
    if batch_size == 10_000:  # one batch per shard that has an image
        assert len(batches) == len({i // 3 for b in batches for i in b})
    assert all(p.patches is None and p.image is None and p.preview is None for p in made[0].scored)


def test_decoding_of_the_next_shard_overlaps_scoring(src, tmp_path, tiny_model_dir, monkeypatch):
    """While the engines score shard 0's last batch, the decode pool already works on shard 1's files."""
    decoded: list[int] = []
    next_shard_decoding = threading.Event()
    seen_ahead = threading.Event()
    real_prepare = local.prepare

    def counting_prepare(task):
        decoded.append(task.index)
        if task.index >= 3:  # a file of shard 1
            next_shard_decoding.set()
        return real_prepare(task)

    def on_score(items):
        # shard 0 (plan indexes 0-2), its last batch: the scorer waits here until the prefetch thread has handed
        # a file of shard 1 to the decoder (an event, not a clock; the bound only stops a broken overlap hanging)
        if max(p.index for p in items) == 2 and next_shard_decoding.wait(timeout=120):
            seen_ahead.set()

    monkeypatch.setattr(local, "prepare", counting_prepare)
    _record_batches(monkeypatch, on_score)
    local.scan(_config(src, tmp_path / "out", tiny_model_dir, batch_size=10_000))
    assert seen_ahead.is_set(), decoded


def test_prepare_shards_is_one_stream_in_plan_order(src, tmp_path, tiny_model_dir):
    config = _config(src, tmp_path / "out", tiny_model_dir)
    with _opened(config) as (_, _, run):
        with SupervisedPool(0, prepare, prepare_failure, pool_limits(config)) as pool:
            stream = list(prepare_shards(run.ctx, run.pending, pool, window=4))
    assert [(s, e.index) for s, e, _ in stream] == [(i // 3, i) for i in range(8)]
    assert {p.status for _, _, p in stream} == {"ok", "error"}


def test_in_flight_is_bounded_in_bytes_on_the_device_path(tmp_path):
    """Host path: a count (a prepared input holds a few patches). Device path: whole padded images, so the pool
    window shrinks until window x the largest image the limits allow fits the budget, and the prefetch queue is
    bounded in bytes too."""
    from gcage_fast.config import Limits
    from gcage_fast.scanning.stages import in_flight
    from gcage_fast.scoring.factory import DEVICE_INFLIGHT_BYTES, max_device_image_bytes

    def ctx(full_image, limits=Limits()):
        config = ScanConfig(inputs=("x",), output=str(tmp_path / "o"), limits=limits)
        return RunContext(config=config, output=str(tmp_path / "o"), run_id="r", model_id="m", model_sha256="s",
                          backend="b", cam_method="gradcam", cam_target="fake", threshold=0.5, top_k=5,
                          full_image=full_image)

    host = in_flight(ctx(False), workers=8)
    assert (host.window, host.prefetch, host.prefetch_bytes) == (32, 32, None)
    dev = in_flight(ctx(True), workers=8)
    assert dev.prefetch_bytes == DEVICE_INFLIGHT_BYTES
    assert 1 <= dev.window < 32 and dev.window * max_device_image_bytes(Limits()) <= DEVICE_INFLIGHT_BYTES
    small = in_flight(ctx(True, Limits(max_pixels=1_000_000)), workers=8)
    assert small.window == 32  # small images: the count is the tighter bound
