"""--resume follows the frozen plan, and says what was added to or removed from the inputs since it was made: in
run.json's since_plan, in the summary (text and --json) and in one warning that says what to do."""

import json
import signal

import genimages as gen
from helpers import read_rows, run_cli


def test_resume_reports_inputs_added_and_removed_since_the_plan(tiny_model_dir, tmp_path):
    root = tmp_path / "in"
    for i in range(6):
        gen.save_image(root / f"a{i}.jpg", 240, 230, seed=50 + i)
    out = tmp_path / "out"
    args = ["scan", root, "-o", out, "--model", tiny_model_dir, "--workers", "1", "--shard-size", "2"]
    killed = run_cli(*args, "--quiet", env={"GCAGE_FAULT_AT": "after_commit:0"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [p.name for p in (out / "commits").glob("*.json")] == ["shard-00000.json"]
    (root / "a4.jpg").unlink()  # planned in shard 2, not committed
    for name in ("b-new1.jpg", "b-new2.jpg"):
        gen.save_image(root / name, 240, 230, seed=60)

    resumed = run_cli(*args, "--resume", "--json")
    expected = {"compared": True, "added": 2, "removed": 1,
                "added_first": [f"{root}/b-new1.jpg", f"{root}/b-new2.jpg"], "removed_first": [f"{root}/a4.jpg"]}
    assert json.loads(resumed.stdout)["since_plan"] == expected
    assert json.loads((out / "run.json").read_text())["since_plan"] == expected
    assert (f"gcage-fast: since the plan of {out} was made, 2 inputs were added ({root}/b-new1.jpg, "
            f"{root}/b-new2.jpg) and 1 removed ({root}/a4.jpg); --resume scans only the planned inputs: scan the "
            f"added ones into a new output with --skip-known {out} (what this one scored is then skipped and points "
            "at its rows); removed inputs keep their rows where they are committed, the others get an fs.vanished "
            "error row") in resumed.stderr.splitlines()
    rows = {r["locator"]: r for r in read_rows(out)}
    assert sorted(rows) == [f"{root}/a{i}.jpg" for i in range(6)]  # the plan's inputs, the new files not
    assert rows[f"{root}/a4.jpg"]["error_code"] == "fs.vanished"
    run_cli("verify", out)

    text = run_cli(*args, "--resume").stdout  # nothing left to do: the comparison is made again
    assert (f"  since plan: 2 inputs added (not scanned by --resume: scan them into a new output with --skip-known "
            f"{out}), 1 removed") in text.splitlines()
