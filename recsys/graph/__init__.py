import os

# Choose DGL's backend here so that DGL does not write ~/.dgl/config.json on first import.
os.environ.setdefault("DGLBACKEND", "pytorch")
