"""``python -m bench``: upstream's server beside rportd on every figure (see bench.compare)."""

from bench.compare import run

run()
