"""Small synthetic interaction logs written by the tests in the real file formats."""
import numpy as np
import pytest


def write_inter(path, rows, rating=True):
    """rows: (user, item, timestamp) -> RecBole atomic .inter with a typed header."""
    header = "user_id:token\titem_id:token\t" + ("rating:float\t" if rating else "") + "timestamp:float"
    lines = [header] + [f"{u}\t{i}\t" + ("4\t" if rating else "") + f"{t}" for u, i, t in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def synthetic_rows(n_users=12, n_items=15, seed=0, min_len=5, max_len=14):
    """A log where each user walks items in a chain, shuffled in file order, with some equal timestamps."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start, n = rng.integers(n_items), rng.integers(min_len, max_len + 1)
        t = 1_000_000 + rng.integers(0, 10_000)
        for k in range(n):
            rows.append((f"u{u}", f"i{(start + k) % n_items}", t))
            t += int(rng.choice([0, 3600, 86400, 7 * 86400]))
    order = rng.permutation(len(rows))
    return [rows[k] for k in order]


@pytest.fixture
def inter_file(tmp_path):
    return write_inter(tmp_path / "toy.inter", synthetic_rows())
