"""bench/gpu.py runs where the GPU machine is bare: without DGL, Prefect, MLflow or Great
Expectations installed. Here it runs on the CPU, on a tiny data set in Gowalla's format, in a
process where importing any of those four fails."""
import json
import subprocess
import sys
from pathlib import Path

from recsys.config import DataConfig
from recsys.data.loaders import with_split

ROOT = Path(__file__).resolve().parents[1]
ABSENT = ("dgl", "prefect", "mlflow", "great_expectations")


def write_lightgcn_format(data, folder: Path) -> None:
    """train.txt / test.txt: `user item item ...` per line."""
    folder.mkdir()
    for split, pairs in (("train", data.train), ("test", data.test)):
        lines = [" ".join(map(str, [u, *sorted(pairs[pairs[:, 0] == u, 1])])) for u in sorted(set(pairs[:, 0]))]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")


def test_the_gpu_bench_runs_on_the_cpu_without_the_orchestration_stack(small_network, tmp_path):
    data = with_split(small_network, DataConfig()).indexed()
    write_lightgcn_format(data, tmp_path / "tiny")
    out = tmp_path / "results"
    script = (f"import sys\nfor m in {ABSENT!r}: sys.modules[m] = None\n"
              "from pathlib import Path\nimport bench.common\n"
              f"bench.common.RESULTS = Path({str(out)!r})\n"
              "from bench.gpu import main\n"
              f"raise SystemExit(main(['--device', 'cpu', '--data', {str(tmp_path / 'tiny')!r}, '--ref-steps', '2',"
              " '--max-epochs', '1', '--scale-members', '0', '--rank-chunk', '64', '--name', 'gpu_check']))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "gpu_check.json").read_text())
    for key in ("device_name", "reference_epoch_seconds", "graphrec_epoch_seconds", "speedup",
                "seconds_to_recall_0.183", "ranking_ms", "torch_version"):
        assert key in record, key
    assert record["device_name"] == "cpu" and record["graphrec_epoch_seconds"] > 0
    assert len(record["headline_curve"]) == 1 and 0 < record["headline_curve"][0]["recall@20"] < 1
    assert (out / "gpu_check.md").exists()

