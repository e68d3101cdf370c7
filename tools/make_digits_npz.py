"""Convert scikit-learn's bundled copy of the UCI digits into fastconv/data/digits.npz (run once).

Usage: python tools/make_digits_npz.py path/to/sklearn/datasets/data/digits.csv.gz

The csv.gz holds 1,797 rows of 64 pixel values (0..16) followed by the label (0..9); it can be
taken from any scikit-learn wheel (``sklearn/datasets/data/digits.csv.gz``) without installing it.
The fixed stratified split (20 % of each class for the test set) is drawn here once, with a
seeded generator, and stored in the file, so that it never depends on NumPy's random streams.
"""

import gzip
import sys
from pathlib import Path

import numpy as np

TEST_FRACTION = 0.2
SPLIT_SEED = 20240601


def main(csv_gz):
    with gzip.open(csv_gz, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    assert table.shape == (1797, 65), table.shape
    assert table.min() >= 0 and table[:, :64].max() <= 16 and table[:, 64].max() <= 9
    images = table[:, :64].astype(np.uint8).reshape(-1, 8, 8)
    labels = table[:, 64].astype(np.uint8)
    rng = np.random.default_rng(SPLIT_SEED)
    test = []
    for c in range(10):
        members = np.flatnonzero(labels == c)
        test.extend(rng.permutation(members)[: int(round(TEST_FRACTION * len(members)))])
    test_index = np.sort(np.array(test, dtype=np.int16))
    out = Path(__file__).resolve().parents[1] / "fastconv" / "data" / "digits.npz"
    np.savez_compressed(out, images=images, labels=labels, test_index=test_index)
    print(f"wrote {out} ({out.stat().st_size} bytes): {len(images)} images, {len(test_index)} test")


if __name__ == "__main__":
    main(sys.argv[1])
