"""The model zoo: weights-only files with cards, `compress`/`decompress` with no flags, a file's model
found by its fingerprint, clear errors, and retraining that reproduces a shipped fingerprint."""
import json

import numpy as np
import pytest
import torch

from lic_utils import cli, config, data, evaluate, models, train, zoo
from lic_utils.errors import LicError

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(progress=False, num_val_crops=0, device="cpu", threads=1, steps=20, ckpt_every=10)


def smoke(**kw) -> config.TrainConfig:
    return config.TrainConfig.for_profile("smoke", **{**FAST, **kw})


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A zoo of three smoke models: two λ of the `mse` family (the default's) and one `lpips`, each
    exported with its Kodak rows (one 64² crop, real files), from runs fine-tuned from one base."""
    root = tmp_path_factory.mktemp("zoo")
    base = root / "runs" / "base"
    train.train(smoke(), base)
    images = evaluate.kodak_images(1, crop=64)
    folder = root / "zoo"
    runs = {}
    for name, family, lmbda, gamma, default in (("mse-hi", "mse", 2e-3, 0.0, True),
                                                ("mse-lo", "mse", 1.6e-2, 0.0, False),
                                                ("lpips-hi", "lpips", 2e-3, 0.01, False)):
        run = root / "runs" / name
        cfg = smoke(lmbda=lmbda, gamma=gamma, steps=10, init_from=str(base / "checkpoint.pt"))
        train.train(cfg, run)
        kodak = evaluate.evaluate_model(run, images, progress=False)
        zoo.export(run, name, kodak, profile="smoke", family=family, default=default, folder=folder)
        runs[name] = (run, cfg)
    return folder, runs


@pytest.fixture
def in_zoo(shipped, monkeypatch):
    """The CLI's zoo is the shipped one."""
    monkeypatch.setattr(zoo, "ZOO_DIR", shipped[0])
    return shipped


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cards_say_where_a_model_came_from_and_what_it_does(shipped):
    folder, runs = shipped
    cards = zoo.cards(folder)
    mse = sorted((c for c in cards if c["family"] == "mse"), key=lambda c: c["kodak"]["bpp"])
    assert [c["name"] for c in cards] == [*(c["name"] for c in mse), "lpips-hi"]  # default family first
    assert len({c["fingerprint"] for c in cards}) == 3
    c = next(c for c in cards if c["name"] == "mse-hi")
    assert c["default"] and c["family"] == "mse" and c["lmbda"] == 2e-3
    assert c["training"]["steps"] == 10 and c["training"]["base"]["steps"] == 20
    assert c["training"]["config"]["init_from"] == "base"  # not this machine's path
    assert c["data"]["bsds500"]["files"] == 500 and len(c["data"]["bsds500"]["sha256"]) == 64
    assert c["kodak"]["images"] == 1 and 0 < c["kodak"]["bpp"] and c["kodak"]["psnr"] > 10
    assert models.load_checkpoint(runs["mse-hi"][0] / "checkpoint.pt").fingerprint() == c["fingerprint"]
    # weights only: no training state, and smaller than the run's checkpoint with its optimizers
    raw = torch.load(c["path"], weights_only=True)
    assert raw["extra"] is None
    run_ckpt = runs["mse-hi"][0] / "checkpoint.pt"
    assert c["file"]["bytes"] < 0.6 * run_ckpt.stat().st_size
    table = zoo.table(folder)
    assert table["quality"].tolist()[:2] == [1, 2] and table["quality"].isna().tolist()[2]
    assert table["model"].tolist() == [c["name"] for c in cards]


def test_choose_by_default_quality_and_name(shipped):
    folder, _ = shipped
    assert zoo.choose(folder=folder)["name"] == "mse-hi"
    rungs = zoo.ladder(folder)
    assert [c["name"] for c in rungs] == [c["name"] for c in zoo.cards(folder)[:2]]
    assert zoo.choose(quality=1, folder=folder)["name"] == rungs[0]["name"]
    assert zoo.choose(quality=2, folder=folder)["name"] == rungs[1]["name"]
    assert zoo.choose(model="lpips-hi", folder=folder)["name"] == "lpips-hi"
    with pytest.raises(LicError, match=r"--quality must be 1 … 2"):
        zoo.choose(quality=3, folder=folder)
    with pytest.raises(LicError, match="no model 'nope' in the zoo; choose from mse-.., mse-.., lpips-hi"):
        zoo.choose(model="nope", folder=folder)


def test_compress_and_decompress_need_no_flags(in_zoo, tmp_path, capsys, kodak_paths):
    src = kodak_paths[4]
    first = zoo.ladder()[0]["name"]
    for flags, expect in (([], "mse-hi"), (["--quality", "1"], first), (["--model", "lpips-hi"], "lpips-hi")):
        lic, png = tmp_path / f"{flags}.lic", tmp_path / f"{flags}.png"
        code, out, err = run_cli(capsys, "compress", src, lic, *flags)
        assert code == 0, err
        assert json.loads(out)["model"] == expect
        code, _, err = run_cli(capsys, "decompress", lic, png)
        assert code == 0, err
        # exactly what the model decodes with its checkpoint given
        model = zoo.load(zoo.choose(model=expect))
        want = data.to_uint8(models_decode(model, lic))
        assert np.array_equal(data.load_rgb(png), want)
    code, out, _ = run_cli(capsys, "metrics", src, tmp_path / "[].lic")  # the zoo decodes it too
    assert code == 0 and json.loads(out)["bpp"] > 0
    code, out, _ = run_cli(capsys, "info", tmp_path / "[].lic")
    assert code == 0 and "estimated_bpp" in json.loads(out)
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "mse-hi" in out and "lpips-hi" in out and "*" in out


def models_decode(model, lic):
    from lic_utils import bitstream

    return bitstream.read_lic(lic, model)


def test_a_file_of_a_model_not_in_the_zoo_says_what_to_do(in_zoo, tmp_path, capsys, kodak_paths):
    other = models.build_model({"N": 8, "M": 12})
    other.update(force=True)
    models.save_checkpoint(tmp_path / "mine.pt", other)
    lic = tmp_path / "a.lic"
    assert run_cli(capsys, "compress", kodak_paths[0], lic, "--checkpoint", tmp_path / "mine.pt")[0] == 0
    code, _, err = run_cli(capsys, "decompress", lic, tmp_path / "a.png")
    assert code == 1 and err.count("\n") == 1
    assert f"made by model weights {other.fingerprint()}, which are not in the zoo" in err
    assert "pass --checkpoint" in err
    assert run_cli(capsys, "decompress", lic, tmp_path / "a.png", "--checkpoint", tmp_path / "mine.pt")[0] == 0


def test_an_empty_or_tampered_zoo_fails_in_one_line(tmp_path, capsys, monkeypatch, shipped, kodak_paths):
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "empty")
    code, _, err = run_cli(capsys, "compress", kodak_paths[0], tmp_path / "a.lic")
    assert code == 1 and err.count("\n") == 1 and "no trained model in" in err and "--checkpoint" in err
    # a card whose fingerprint does not match its weights
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in shipped[0].glob("mse-hi.*"):
        (bad / f.name).write_bytes(f.read_bytes())
    card = json.loads((bad / "mse-hi.json").read_text())
    card["fingerprint"] = "0" * 16
    (bad / "mse-hi.json").write_text(json.dumps(card))
    monkeypatch.setattr(zoo, "ZOO_DIR", bad)
    code, _, err = run_cli(capsys, "compress", kodak_paths[0], tmp_path / "b.lic")
    assert code == 1 and "but its card says 0000000000000000" in err
    (bad / "mse-hi.json").write_text("{not json")
    code, _, err = run_cli(capsys, "models")
    assert code == 1 and "unreadable" in err and err.count("\n") == 1


def test_retraining_a_shipped_model_reproduces_its_fingerprint(shipped, tmp_path):
    """Training is deterministic on one thread: the base and the fine-tune, trained again from the
    card's configs, give the shipped weights."""
    folder, _ = shipped
    card = next(c for c in zoo.cards(folder) if c["name"] == "lpips-hi")
    base_cfg = config.TrainConfig.from_dict(card["training"]["base"]["config"])
    train.train(base_cfg, tmp_path / "base")
    cfg = config.TrainConfig.from_dict({**card["training"]["config"],
                                        "init_from": str(tmp_path / "base" / "checkpoint.pt")})
    train.train(cfg, tmp_path / "again")
    assert models.load_checkpoint(tmp_path / "again" / "checkpoint.pt").fingerprint() == card["fingerprint"]


def test_models_verify_evaluates_every_card_again(in_zoo, capsys):
    """The zoo's numbers (the README's) are checked against a fresh evaluation with real files."""
    folder = in_zoo[0]
    code, out, _ = run_cli(capsys, "models", "--verify")
    assert code == 0 and "3 models, 15 numbers: all match their cards" in out
    original = (folder / "mse-lo.json").read_text()
    card = json.loads(original)
    assert card["kodak"]["crop"] == 64
    card["kodak"]["psnr"] += 0.01
    (folder / "mse-lo.json").write_text(json.dumps(card))
    try:
        code, out, _ = run_cli(capsys, "models", "--verify")
        assert code == 1 and "1 differ from their cards" in out and "mse-lo" in out and "psnr" in out
    finally:
        (folder / "mse-lo.json").write_text(original)


def test_the_readme_lists_the_zoo_from_its_cards(shipped):
    from lic_utils import study

    folder, _ = shipped
    lines = study._zoo_section(folder)
    assert "3 files of weights" in lines[0]
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split(" | ")[0] for r in rows] == ["| " + c["name"] + (" *" if c["default"] else "")
                                                 for c in zoo.cards(folder)]
    card = next(c for c in zoo.cards(folder) if c["name"] == "lpips-hi")
    assert f"| lpips-hi |  | {card['kodak']['bpp']:.3f} | {card['kodak']['psnr']:.2f} |" in "\n".join(rows)


def test_a_zoo_without_a_default_names_its_models(tmp_path, capsys, monkeypatch, shipped, kodak_paths):
    """A zoo that holds only models off the ladder (the reference base, before its fine-tunes ship)."""
    only = tmp_path / "only"
    only.mkdir()
    for f in shipped[0].glob("lpips-hi.*"):
        (only / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(zoo, "ZOO_DIR", only)
    code, _, err = run_cli(capsys, "compress", kodak_paths[0], tmp_path / "a.lic")
    assert code == 1 and err.count("\n") == 1
    assert "is marked default: name one with --model (lpips-hi), or pass --checkpoint" in err
    assert run_cli(capsys, "compress", kodak_paths[0], tmp_path / "a.lic", "--model", "lpips-hi")[0] == 0
    code, out, _ = run_cli(capsys, "models")  # listed, off any ladder (and so in the README's table)
    assert code == 0 and "lpips-hi" in out
    from lic_utils import study

    assert any(line.startswith("| lpips-hi |  |") for line in study._zoo_section(only))


@pytest.mark.parametrize("broken", ["no kodak", "no family", "two defaults"])
def test_a_card_that_lacks_a_field_or_a_second_default_is_one_line(broken, tmp_path, capsys, monkeypatch, shipped,
                                                                   kodak_paths):
    """compress and models read every card: a card without its Kodak numbers or family, or a second
    card marked default (compress would pick one family silently), is a one-line error naming the fix."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    for f in shipped[0].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    name = "mse-lo" if broken == "two defaults" else "mse-hi"
    card = json.loads((folder / f"{name}.json").read_text())
    if broken == "two defaults":
        card["default"] = True
    else:
        del card[broken.removeprefix("no ")]
    (folder / f"{name}.json").write_text(json.dumps(card))
    monkeypatch.setattr(zoo, "ZOO_DIR", folder)
    for argv in (["compress", kodak_paths[0], tmp_path / "a.lic"], ["models"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 1 and err.count("\n") == 1, err
        assert ("marked default" in err) if broken == "two defaults" else (f"lacks {broken[3:]}" in err)
        assert "git checkout" in err
