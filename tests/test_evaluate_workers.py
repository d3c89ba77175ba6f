"""codec_sweep and matched_codecs in worker processes (`workers` > 1): the same rows as in one
process, the same cache, and nothing measured twice. Tiny crops: each pool spawns its workers."""
import dataclasses

import pandas as pd
import pytest

from lic_utils import codecs, evaluate
from lic_utils.errors import LicError

CODECS = ["jpeg", "webp"]
# what the codecs and metrics compute (deterministic); the timings are not
MEASURED = ["bytes", "bpp", *evaluate.METRICS]


@pytest.fixture(scope="module")
def images():
    return evaluate.kodak_images(2, crop=64)


def _sorted(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    return df.sort_values(key).reset_index(drop=True)


def _refuse_to_measure(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a cached row was measured again")

    for name in CODECS:
        monkeypatch.setitem(codecs.CODECS, name, dataclasses.replace(codecs.CODECS[name], _encode=refuse))


def test_codec_sweep_in_workers_gives_the_serial_rows_and_cache(tmp_path, images, monkeypatch):
    serial_csv, parallel_csv = tmp_path / "serial.csv", tmp_path / "parallel.csv"
    serial = evaluate.codec_sweep(images, codecs_=CODECS, n_qualities=2, cache=serial_csv, progress=False)
    parallel = evaluate.codec_sweep(images, codecs_=CODECS, n_qualities=2, cache=parallel_csv,
                                    progress=False, workers=2)
    assert len(serial) == len(parallel) == 8
    cols = [*evaluate.SWEEP_KEY, "settings", *MEASURED]
    pd.testing.assert_frame_equal(_sorted(parallel[cols], evaluate.SWEEP_KEY),
                                  _sorted(serial[cols], evaluate.SWEEP_KEY), check_exact=True)

    # an interrupted run: only the first image's rows were written; the rest is measured on resuming
    lines = parallel_csv.read_text().splitlines(keepends=True)
    parallel_csv.write_text("".join([lines[0], *(ln for ln in lines[1:] if ln.startswith(images[0][0] + ","))]))
    assert len(pd.read_csv(parallel_csv)) == 4
    evaluate.codec_sweep(images, codecs_=CODECS, n_qualities=2, cache=parallel_csv, progress=False, workers=2)
    # not exactly: the kept rows were read back and written again, and read_csv's default parser can
    # move a float's last digit (in one process too); the new rows are exact, as above
    cached = pd.read_csv(parallel_csv)
    pd.testing.assert_frame_equal(_sorted(cached[cols], evaluate.SWEEP_KEY),
                                  _sorted(pd.read_csv(serial_csv)[cols], evaluate.SWEEP_KEY), rtol=1e-14)

    _refuse_to_measure(monkeypatch)  # everything is cached now: no pool, nothing measured
    again = evaluate.codec_sweep(images, codecs_=CODECS, n_qualities=2, cache=parallel_csv, progress=False,
                                 workers=2)
    pd.testing.assert_frame_equal(pd.read_csv(parallel_csv), cached)
    pd.testing.assert_frame_equal(again, cached)


def test_matched_codecs_in_workers_gives_the_serial_rows_and_cache(tmp_path, images, monkeypatch):
    # two "models" at made-up sizes; one target is below JPEG's floor on a 64² crop
    learned = pd.DataFrame([{"model": m, "fingerprint": fp, "image": name, "bpp": bpp}
                            for m, fp, bpps in (("a", "00000000000000aa", (0.3, 1.0)),
                                                ("b", "00000000000000bb", (0.05, 0.6)))
                            for (name, _), bpp in zip(images, bpps)])
    serial_csv, parallel_csv = tmp_path / "serial.csv", tmp_path / "parallel.csv"
    serial = evaluate.matched_codecs(learned, images, CODECS, cache=serial_csv, progress=False)
    parallel = evaluate.matched_codecs(learned, images, CODECS, cache=parallel_csv, progress=False,
                                       workers=2)
    assert len(serial) == len(parallel) == 8
    key = ["fingerprint", "image", "codec"]
    cols = [*key, "model", "settings", "quality", "target_bpp", "below_floor", *MEASURED]
    pd.testing.assert_frame_equal(_sorted(parallel[cols], key), _sorted(serial[cols], key), check_exact=True)
    pd.testing.assert_frame_equal(_sorted(evaluate.read_rows(parallel_csv)[cols], key),
                                  _sorted(evaluate.read_rows(serial_csv)[cols], key), check_exact=True)

    _refuse_to_measure(monkeypatch)
    again = evaluate.matched_codecs(learned, images, CODECS, cache=parallel_csv, progress=False, workers=2)
    assert len(evaluate.read_rows(parallel_csv)) == 8
    pd.testing.assert_frame_equal(again, parallel)


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2", True])
def test_workers_must_be_a_positive_integer(workers, images):
    learned = pd.DataFrame([{"model": "a", "fingerprint": "00000000000000aa", "image": images[0][0], "bpp": 1.0}])
    with pytest.raises(LicError, match="workers"):
        evaluate.codec_sweep(images, codecs_=CODECS, n_qualities=2, progress=False, workers=workers)
    with pytest.raises(LicError, match="workers"):
        evaluate.matched_codecs(learned, images, CODECS, progress=False, workers=workers)
