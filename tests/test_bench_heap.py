"""bench/heap.py's training process: with compute.reuse_memory on and off the loop trains the same
model (the same validation figure after the same epochs); only where its memory comes from differs."""


def test_the_two_modes_train_alike(tmp_path, monkeypatch):
    from bench.heap import worker
    from recsys import heap
    from recsys.data.files import save_files
    from recsys.data.synthetic import generate

    monkeypatch.setenv(heap.ENV, "1")  # put back after the worker sets it
    files = {k: str(v) for k, v in save_files(generate(n_users=600, n_items=300, seed=0), tmp_path).items()}
    on, off = (worker(600, 2, files, reuse) for reuse in (True, False))
    assert on["reuse_memory"] and not off["reuse_memory"]
    assert len(on["epoch_seconds"]) == len(off["epoch_seconds"]) == 2
    assert on["valid_recall@20"] == off["valid_recall@20"] > 0
    assert on["train_pairs"] == off["train_pairs"] > 0
